"""The image pipelines of the harness against independent computations, their cache and normalisation."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

BASE = Path(__file__).resolve().parent.parent / "programs" / "image-classification-base"
sys.path.insert(0, str(BASE))

from harness import cli  # noqa: E402
from harness.dataset import load_dataset  # noqa: E402
from harness.errors import FormatError, HarnessError, UsageError  # noqa: E402
from harness.preprocess import (  # noqa: E402
    PROFILES, CropCache, CropParams, centre_crop, crop_image, crop_params_for, normalise, resize_shorter_side,
)

ROOT = BASE.parent.parent
PYTORCH = "mlperf-resnet50-pytorch"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


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


def torchvision_style_crop(path: Path) -> np.ndarray:
    """The reference's PyTorch steps with PIL directly: F.resize(img, 256) bilinear, F.center_crop(224)."""
    from PIL import Image

    image = Image.fromarray(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = 256, int(256 * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    image = image.resize((new_w, new_h), Image.BILINEAR)
    top, left = round((new_h - 224) / 2.0), round((new_w - 224) / 2.0)  # ints: Python rounds halves to even
    return np.asarray(image.crop((left, top, left + 224, top + 224)))


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


# ---------------------------------------------------------------------------------------------- PyTorch profile


@pytest.mark.parametrize("name", ["chelsea.png", "coffee.png", "rocket.jpg", "grace_hopper.jpg"])
def test_pytorch_profile_crop_matches_pil_steps_pixel_for_pixel(name):
    path = real_photos()[name]
    ours = crop_image(path, crop_params_for(PYTORCH))
    expected = torchvision_style_crop(path)
    assert ours.dtype == np.uint8 and ours.shape == (224, 224, 3)
    assert np.array_equal(ours, expected)
    assert not np.array_equal(ours, straightforward_crop(path))  # another pipeline, other pixels


def test_pytorch_profile_rounds_the_crop_offset_as_torchvision():
    # rocket: 427x640 -> 256x383; (383 - 224) / 2 = 79.5 rounds to 80 (truncation would give 79)
    grid = np.arange(256 * 383 * 3, dtype=np.int64).reshape(256, 383, 3)
    assert centre_crop(grid, 224, rounded=True)[0, 0, 0] == grid[16, 80, 0]
    assert centre_crop(grid, 224)[0, 0, 0] == grid[16, 79, 0]
    odd = np.arange(227 * 229).reshape(227, 229, 1)  # top 1.5 rounds to 2, left 2.5 to 2 (halves to even)
    assert np.array_equal(centre_crop(odd, 224, rounded=True), odd[2:226, 2:226])
    assert np.array_equal(centre_crop(odd, 224), odd[1:225, 2:226])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_pytorch_profile_normalises_as_torchvision_to_tensor_and_normalize(layout):
    torch = pytest.importorskip("torch")
    crops = np.stack([torchvision_style_crop(real_photos()[n]) for n in ("chelsea.png", "coffee.png")])
    got = normalise(crops, PYTORCH, layout)
    # to_tensor: CHW float32 / 255; normalize: sub(mean).div(std) per channel, in torch
    tensor = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous().float().div(255)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = tensor.sub(mean).div(std).numpy()
    if layout == "NHWC":
        expected = expected.transpose(0, 2, 3, 1)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.array_equal(got, expected)
    assert -2.2 < got.min() and got.max() < 2.7


def test_existing_profiles_keep_their_cache_key_and_geometry():
    # the key the OpenCV pipeline has always had: caches built before stay valid
    fields = {"format": 1, "size": 224, "crop_percent": 87.5, "interpolation": "area", "cv2": cv2.__version__}
    old_key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    assert CropParams().key == old_key
    assert crop_params_for("mlperf-resnet50") == crop_params_for("efficientnet-lite") == CropParams()
    assert crop_params_for(PYTORCH) == CropParams(interpolation="bilinear", library="pillow")
    assert crop_params_for(PYTORCH).key != old_key


def test_the_two_pipelines_never_share_cache_files(photo_dir, tmp_path):
    dataset = load_dataset(photo_dir)
    opencv = CropCache(tmp_path / "cache")
    pillow = CropCache(tmp_path / "cache", crop_params_for(PYTORCH))
    assert opencv.directory != pillow.directory and opencv.directory.parent == pillow.directory.parent
    assert opencv.ensure(dataset.samples, progress=False).computed == 4
    # the OpenCV crops are there, yet the Pillow pipeline computes all of its own (in parallel here)
    assert pillow.ensure(dataset.samples, workers=2, progress=False).computed == 4
    assert pillow.ensure(dataset.samples, progress=False).reused == 4
    assert not {opencv.path_for(s) for s in dataset.samples} & {pillow.path_for(s) for s in dataset.samples}
    for sample in dataset.samples:
        assert np.array_equal(pillow.load(sample), torchvision_style_crop(sample.path))
        assert np.array_equal(opencv.load(sample), straightforward_crop(sample.path))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [opencv.directory.name, pillow.directory.name])


def test_without_pillow_the_pytorch_profile_fails_naming_itself(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "PIL", None)  # `from PIL import Image` now raises ImportError
    with pytest.raises(HarnessError, match=f"profile '{PYTORCH}'.*pip install pillow") as info:
        crop_params_for(PYTORCH)
    assert info.value.hint == "pip install pillow"
    with pytest.raises(HarnessError, match="pip install pillow"):
        CropCache(tmp_path / "cache", CropParams(interpolation="bilinear", library="pillow"))
    assert crop_params_for("mlperf-resnet50") == CropParams()  # the OpenCV profiles never need it
    assert CropCache(tmp_path / "cache").params == CropParams()


def test_without_pillow_the_harness_stops_before_preprocessing(photo_dir, tmp_path):
    code = "import sys; sys.modules['PIL'] = None; from harness.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {k: v for k, v in os.environ.items() if k != "EXTRA_OPS"}
    env.update(PYTHONPATH=str(BASE), PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run(
        [sys.executable, "-c", code, "--backend", "null", "--profile", PYTORCH, "--dataset-path", str(photo_dir),
         "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "run"), "--time", "1"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 1, done.stderr
    assert f"error: profile '{PYTORCH}'" in done.stderr and "pip install pillow" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run" / "result.json").exists()


def test_pipeline_names_and_interpolations_are_checked():
    with pytest.raises(UsageError, match="pipeline 'skimage'"):
        CropParams(library="skimage")
    with pytest.raises(UsageError, match="'area' for the pillow pipeline"):
        CropParams(library="pillow")  # area is OpenCV's
    with pytest.raises(UsageError, match="'bilinear' for the opencv pipeline"):
        CropParams(interpolation="bilinear")
    with pytest.raises(UsageError, match="unknown profile 'nope'"):
        normalise(np.zeros((1, 4, 4, 3), dtype=np.uint8), "nope")
    with pytest.raises(UsageError, match="unknown profile"):
        crop_params_for("nope")


def test_every_model_package_profile_is_one_the_harness_accepts():
    assert set(cli.PROFILE_NAMES) == set(PROFILES)
    choices = next(a.choices for a in cli.build_parser()._actions if a.dest == "profile")
    assert set(choices) == set(PROFILES)
    seen = set()
    for meta_path in sorted((ROOT / "packages").glob("model-*/meta.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("abstract"):
            continue  # a base entry (model-derived-base): the packages deriving from it carry the profile
        profile = meta["env"]["ML_MODEL_PROFILE"]
        assert profile in PROFILES, meta_path
        seen.add(profile)
    assert PYTORCH in seen
    # the program passes the model's profile to the harness
    argv = json.loads((BASE / "meta.json").read_text())["argv"]
    assert ["--profile", "{env:ML_MODEL_PROFILE}"] in argv


@pytest.mark.slow
def test_pytorch_backend_runs_the_pytorch_profile_end_to_end(photo_dir, tmp_path):
    torch = pytest.importorskip("torch")
    from harness.resnet50 import build_resnet50, seeded_state_dict

    # seeded weights see inputs of the mean-subtracted scale; scale conv1 so /255-normalised ones
    # (about 58 times smaller) tell these photos apart too
    state = seeded_state_dict(0)
    state["conv1.weight"] = state["conv1.weight"] * 58.0
    model_path = tmp_path / "resnet50_scaled.pth"
    torch.save(state, model_path)
    model = build_resnet50()
    model.load_state_dict(state)
    dataset = load_dataset(photo_dir)
    crops = np.stack([torchvision_style_crop(s.path) for s in dataset.samples])
    tensor = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous().float().div(255)
    tensor = tensor.sub(torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)).div(torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
    with torch.no_grad():
        expected = model(tensor).argmax(1).tolist()
        other = model(torch.from_numpy(normalise(np.stack([straightforward_crop(s.path) for s in dataset.samples]),
                                                 PYTORCH))).argmax(1).tolist()
    assert len(set(expected)) >= 3 and expected != other, "the photos and the two crops must be told apart"

    cache = tmp_path / "cache"
    CropCache(cache).ensure(dataset.samples, progress=False)  # OpenCV crops of the same photos already there
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "EXTRA_OPS"}
    env.update(PYTHONPATH=str(BASE), PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run(
        [sys.executable, "-m", "harness", "--backend", "pytorch", "--model", str(model_path), "--profile", PYTORCH,
         "--scenario", "Offline", "--accuracy", "--dataset-path", str(photo_dir), "--cache-dir", str(cache),
         "--max-batchsize", "2", "--accuracy-meaningless", "--output", str(run)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    entries = json.loads((run / "mlperf_log_accuracy.json").read_text())
    got = {e["qsl_idx"]: int(np.frombuffer(bytes.fromhex(e["data"]), dtype=np.float32)[0]) for e in entries}
    assert got == dict(enumerate(expected))
    result = json.loads((run / "result.json").read_text())
    assert result["model"]["profile"] == PYTORCH
    assert result["dataset"]["preprocessed_now"] == 4  # none of the OpenCV crops was taken
    assert Path(result["dataset"]["cache_dir"]).name == f"crops-{crop_params_for(PYTORCH).key}"
