"""The ImageNet validation directory: count its images and point at a val_map.txt beside them."""
from __future__ import annotations

import os as _os
from pathlib import Path

_FULL = 50_000
_MIN = 500


def _count_images(directory: Path) -> int:
    with _os.scandir(directory) as entries:
        return sum(1 for e in entries if e.name.startswith("ILSVRC2012_val_") and e.name.endswith(".JPEG"))


def setup_env(*, dir: Path) -> dict:
    """CK_ENV_DATASET_IMAGENET_COUNT, and CK_CAFFE_IMAGENET_VAL_TXT when a val_map.txt is there."""
    extra = {"CK_ENV_DATASET_IMAGENET_COUNT": str(_count_images(dir))}
    for name in ("val_map.txt", "val.txt"):
        if (dir / name).is_file():
            extra["CK_CAFFE_IMAGENET_VAL_TXT"] = str(dir / name)
            break
    return extra


def extra_tags(*, full_path: Path) -> list[str]:
    """``full`` for all 50,000 images, ``min`` for CK's 500-image subset."""
    count = _count_images(full_path.parent)
    return ["full"] if count == _FULL else ["min"] if count == _MIN else []
