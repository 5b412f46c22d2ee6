"""Harness input from others: val_map names that climb out, truncated images, a byte-order mark, CRLF lines."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

BASE = Path(__file__).resolve().parents[2] / "programs" / "image-classification-base"
sys.path.insert(0, str(BASE))

from harness.dataset import load_dataset, read_val_map  # noqa: E402
from harness.errors import FormatError, InputNotFound  # noqa: E402
from harness.preprocess import CropCache, crop_image  # noqa: E402


def _photo(path: Path, seed: int = 0, ext: str = ".jpg") -> Path:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, size=(300, 400, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path.with_suffix(ext)), image)
    return path.with_suffix(ext)


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "sub/../../outside.jpg",
                                  "..\\..\\windows.jpg", "c:evil.jpg"])
def test_a_name_outside_the_dataset_is_refused_with_its_line(tmp_path, name):
    (tmp_path / "data").mkdir()
    _photo(tmp_path / "data" / "ok")
    listing = tmp_path / "data" / "val_map.txt"
    listing.write_text(f"ok.jpg 1\n{name} 14\n")
    with pytest.raises(FormatError) as caught:
        load_dataset(tmp_path / "data", listing)
    assert f"{listing}:2" in caught.value.message and repr(name) in caught.value.message


def test_a_byte_order_mark_and_crlf_line_ends_are_read_as_plain_lines(tmp_path):
    _photo(tmp_path / "first")
    _photo(tmp_path / "second", seed=1)
    listing = tmp_path / "val_map.txt"
    listing.write_bytes(b"\xef\xbb\xbffirst.jpg 3\r\nsecond.jpg 5\r\n")
    entries = read_val_map(listing)
    assert [(e.name, e.labels) for e in entries] == [("first.jpg", (3,)), ("second.jpg", (5,))]
    assert [s.name for s in load_dataset(tmp_path, listing).samples] == ["first.jpg", "second.jpg"]


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_a_truncated_image_fails_loudly_with_its_name_and_list_line(tmp_path, ext):
    good = _photo(tmp_path / "good", ext=ext)
    cut = _photo(tmp_path / "cut", seed=2, ext=ext)
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    listing = tmp_path / "val_map.txt"
    listing.write_text(f"{good.name} 1\n{cut.name} 2\n")
    dataset = load_dataset(tmp_path, listing)
    with pytest.raises(FormatError) as caught:
        CropCache(tmp_path / "cache").ensure(dataset.samples, progress=False)
    message = caught.value.message
    assert "truncated" in message and str(cut) in message and f"line 2: {cut.name}" in message
    assert crop_image(good).shape == (224, 224, 3)


def test_an_undecodable_image_and_an_empty_one_are_named(tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is no image at all" * 10)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for path in (junk, empty):
        with pytest.raises(FormatError, match=str(path)):
            crop_image(path)


def test_a_listed_image_that_is_missing_is_named_with_its_line(tmp_path):
    _photo(tmp_path / "here")
    listing = tmp_path / "val_map.txt"
    listing.write_text("here.jpg 1\nnot-here.jpg 2\n")
    with pytest.raises(InputNotFound, match=r"not-here\.jpg.*val_map\.txt:2"):
        load_dataset(tmp_path, listing)
