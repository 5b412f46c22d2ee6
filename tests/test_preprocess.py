"""The image pipeline of the harness against an independent computation, its cache and normalisation."""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

BASE = Path(__file__).resolve().parent.parent / "programs" / "image-classification-base"
sys.path.insert(0, str(BASE))

from harness.dataset import load_dataset  # noqa: E402
from harness.errors import FormatError, UsageError  # noqa: E402
from harness.preprocess import (  # noqa: E402
    CropCache, CropParams, centre_crop, crop_image, normalise, resize_shorter_side,
)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{name} is not installed (its sample photos are the test data)")
    return Path(list(spec.submodule_search_locations)[0])


def real_photos() -> dict[str, Path]:
    """Real photos shipped by pip packages: three from scikit-image, one from matplotlib."""
    skimage_data = _package_dir("skimage") / "data"
    mpl_data = _package_dir("matplotlib") / "mpl-data" / "sample_data"
    return {
        "chelsea.png": skimage_data / "chelsea.png",
        "coffee.png": skimage_data / "coffee.png",
        "rocket.jpg": skimage_data / "rocket.jpg",
        "grace_hopper.jpg": mpl_data / "grace_hopper.jpg",
    }


def straightforward_crop(path: Path) -> np.ndarray:
    """The reference steps written out plainly, independent of the harness code."""
    bgr = cv2.imread(str(path))
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    h, w = rgb.shape[:2]
    if h > w:
        new_w, new_h = 256, int(256.0 * h / w)
    else:
        new_h, new_w = 256, int(256.0 * w / h)
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
    top, left = int((new_h - 224) / 2), int((new_w - 224) / 2)
    return resized[top:top + 224, left:left + 224]


@pytest.fixture
def photo_dir(tmp_path) -> Path:
    """The photos copied into a fresh directory with a val_map, so tests may change them."""
    directory = tmp_path / "photos"
    directory.mkdir()
    lines = []
    for i, (name, source) in enumerate(real_photos().items()):
        shutil.copy(source, directory / name)
        lines.append(f"{name} {i}")
    (directory / "val_map.txt").write_text("\n".join(lines) + "\n")
    return directory


@pytest.mark.parametrize("name", ["chelsea.png", "coffee.png", "rocket.jpg", "grace_hopper.jpg"])
def test_crop_matches_the_reference_steps_pixel_for_pixel(name):
    path = real_photos()[name]
    ours = crop_image(path)
    expected = straightforward_crop(path)
    assert ours.dtype == np.uint8 and ours.shape == (224, 224, 3)
    assert np.array_equal(ours, expected)


def test_resize_truncates_the_long_side_and_crop_is_centred():
    # chelsea is 300x451: 256 x int(256*451/300) = 256 x 384; grace_hopper 600x512 -> 300 x 256
    chelsea = cv2.imread(str(real_photos()["chelsea.png"]))
    assert resize_shorter_side(chelsea, 256).shape == (256, 384, 3)
    hopper = cv2.imread(str(real_photos()["grace_hopper.jpg"]))
    assert resize_shorter_side(hopper, 256).shape == (300, 256, 3)
    rocket = cv2.imread(str(real_photos()["rocket.jpg"]))  # 427x640 -> int(383.7) = 383
    assert resize_shorter_side(rocket, 256).shape == (256, 383, 3)
    grid = np.arange(7 * 9).reshape(7, 9, 1).astype(np.uint8).repeat(3, axis=2)
    cropped = centre_crop(grid, 4)  # left = int(2.5) = 2, top = int(1.5) = 1
    assert cropped[0, 0, 0] == grid[1, 2, 0] and cropped.shape == (4, 4, 3)
    assert CropParams().resize_side == 256


def test_grey_images_become_three_channels(tmp_path):
    grey = (np.arange(300 * 400) % 251).astype(np.uint8).reshape(300, 400)
    path = tmp_path / "grey.png"
    cv2.imwrite(str(path), grey)
    crop = crop_image(path)
    assert crop.shape == (224, 224, 3)
    assert np.array_equal(crop[..., 0], crop[..., 1]) and np.array_equal(crop[..., 1], crop[..., 2])


def test_undecodable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(FormatError, match="broken.jpg"):
        crop_image(bad)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_mlperf_profile_subtracts_means_only(layout):
    crops = np.stack([straightforward_crop(p) for p in real_photos().values()])
    got = normalise(crops, "mlperf-resnet50", layout)
    expected = crops.astype(np.float32) - np.array([123.68, 116.78, 103.94], dtype=np.float32)
    if layout == "NCHW":
        expected = expected.transpose(0, 3, 1, 2)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_efficientnet_profile_scales_around_127(layout):
    crops = np.stack([straightforward_crop(real_photos()["coffee.png"])])
    got = normalise(crops, "efficientnet-lite", layout)
    expected = (crops.astype(np.float32) - 127.0) / 128.0
    if layout == "NCHW":
        expected = expected.transpose(0, 3, 1, 2)
    assert np.array_equal(got, expected)
    assert got.min() >= -127 / 128 and got.max() <= 1.0


def test_normalise_rejects_unknown_layout_and_float_input():
    crops = np.zeros((1, 224, 224, 3), dtype=np.uint8)
    with pytest.raises(UsageError, match="layout"):
        normalise(crops, "mlperf-resnet50", "CHWN")
    with pytest.raises(ValueError, match="uint8"):
        normalise(crops.astype(np.float32))


def test_cache_is_reused_without_recomputing(photo_dir, tmp_path):
    dataset = load_dataset(photo_dir)
    cache = CropCache(tmp_path / "cache")
    first = cache.ensure(dataset.samples, workers=2, progress=False)
    assert (first.computed, first.reused) == (4, 0)
    files = {s.name: cache.path_for(s) for s in dataset.samples}
    stamps = {name: path.stat().st_mtime_ns for name, path in files.items()}
    second = cache.ensure(dataset.samples, progress=False)
    assert (second.computed, second.reused) == (0, 4)
    assert {name: path.stat().st_mtime_ns for name, path in files.items()} == stamps
    for sample in dataset.samples:
        assert np.array_equal(cache.load(sample), straightforward_crop(sample.path))
    assert np.array_equal(cache.load_many(dataset.samples)[2], straightforward_crop(dataset.samples[2].path))


def test_cache_is_invalidated_when_the_source_changes(photo_dir, tmp_path):
    cache = CropCache(tmp_path / "cache")
    cache.ensure(load_dataset(photo_dir).samples, progress=False)
    # same size, new mtime: recompute that one only
    target = photo_dir / "coffee.png"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    report = cache.ensure(load_dataset(photo_dir).samples, progress=False)
    assert (report.computed, report.reused) == (1, 3)
    # different content at the same path: the crop follows the new image
    shutil.copy(real_photos()["rocket.jpg"], photo_dir / "chelsea.png")
    dataset = load_dataset(photo_dir)
    assert cache.ensure(dataset.samples, progress=False).computed == 1
    chelsea = next(s for s in dataset.samples if s.name == "chelsea.png")
    assert np.array_equal(cache.load(chelsea), straightforward_crop(real_photos()["rocket.jpg"]))


def test_cache_is_invalidated_when_a_parameter_changes(photo_dir, tmp_path):
    dataset = load_dataset(photo_dir)
    CropCache(tmp_path / "cache").ensure(dataset.samples, progress=False)
    smaller = CropCache(tmp_path / "cache", CropParams(size=192))
    assert smaller.ensure(dataset.samples, progress=False).computed == 4
    assert smaller.load(dataset.samples[0]).shape == (192, 192, 3)
    linear = CropCache(tmp_path / "cache", CropParams(interpolation="linear"))
    assert linear.ensure(dataset.samples, progress=False).computed == 4
    assert CropParams().key != CropParams(crop_percent=80.0).key


def test_damaged_cache_file_is_rebuilt(photo_dir, tmp_path):
    dataset = load_dataset(photo_dir)
    cache = CropCache(tmp_path / "cache")
    cache.ensure(dataset.samples, progress=False)
    sample = dataset.samples[1]
    cache.path_for(sample).write_bytes(b"\x93NUMPY truncated")
    assert np.array_equal(cache.load(sample), straightforward_crop(sample.path))
    np.save(cache.path_for(sample), np.zeros((10, 10, 3), dtype=np.uint8))
    assert np.array_equal(cache.load(sample), straightforward_crop(sample.path))


def test_parallel_build_reports_an_undecodable_image(photo_dir, tmp_path):
    (photo_dir / "broken.jpg").write_bytes(b"\xff\xd8 garbage")
    with open(photo_dir / "val_map.txt", "a") as handle:
        handle.write("broken.jpg 3\n")
    dataset = load_dataset(photo_dir)
    with pytest.raises(FormatError, match="broken.jpg"):
        CropCache(tmp_path / "cache").ensure(dataset.samples, workers=2, progress=False)


def test_bad_crop_parameters_are_usage_errors():
    with pytest.raises(UsageError, match="interpolation"):
        CropParams(interpolation="nearest-ish")
    with pytest.raises(UsageError, match="crop"):
        CropParams(crop_percent=0)
