"""Install hook: locate the 500 unpacked ImageNet 2012 validation images, check them, and write their val map."""

from __future__ import annotations

import pathlib as _pathlib
import re as _re
import typing as _typing

from ckx.core.errors import IntegrityError as _IntegrityError
from ckx.core.errors import MetaError as _MetaError
from ckx.core.errors import NotFound as _NotFound

_MARKER = "ILSVRC2012_val_00000001.JPEG"
_NAME = _re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG$")
_MAX_DEPTH = 3
_VAL_MAP = "val_map.txt"
_AUX_VAL_MAP = "CK_CAFFE_IMAGENET_VAL_TXT"


def install(
    *,
    install_dir: _pathlib.Path,
    meta: dict,
    env: dict[str, str],
    info: _typing.Callable[[str], None],
) -> dict[str, str] | None:
    """Find the image directory in the unpacked archive; require images 1..N, N from the meta's count.

    The first N lines of the aux package's val.txt (a dependency) become this dataset's own val map, so a
    program pairs the images with exactly their labels (QSL index = line) and needs no 50,000-line map.
    """
    count = int(meta.get("env", {}).get("CK_ENV_DATASET_IMAGENET_COUNT", 500))
    image_dir = _find_marker_dir(install_dir)
    numbers = sorted(int(m.group(1)) for p in image_dir.iterdir() if (m := _NAME.match(p.name)) and p.is_file())
    if numbers != list(range(1, count + 1)):
        missing = sorted(set(range(1, count + 1)) - set(numbers))
        extra = sorted(set(numbers) - set(range(1, count + 1)))
        raise _IntegrityError(
            f"{image_dir} holds {len(numbers)} validation images, expected exactly 1..{count}"
            + (f"; missing e.g. {missing[:5]}" if missing else "")
            + (f"; unexpected e.g. {extra[:5]}" if extra else ""),
            hint="the archive is not the 500-image subset; nothing was installed",
        )
    relative = image_dir.relative_to(install_dir).as_posix()
    info(f"found {count} validation images in {relative}")
    _write_val_map(env, install_dir / _VAL_MAP, count)
    location = "{install_dir}" if relative == "." else "{install_dir}/" + relative
    return {
        "CK_ENV_DATASET_IMAGENET_VAL": location,
        "CK_ENV_DATASET_IMAGENET_COUNT": str(count),
        _AUX_VAL_MAP: "{install_dir}/" + _VAL_MAP,
    }


def _write_val_map(env: dict[str, str], target: _pathlib.Path, count: int) -> None:
    """Copy the first ``count`` lines of the aux val map, checking they name images 1..count in order."""
    source = env.get(_AUX_VAL_MAP)
    if not source:
        raise _NotFound(
            f"{_AUX_VAL_MAP} is not set: the labels of the 500 images come from the aux package",
            hint="ckx install package --tags=imagenet,2012,aux",
        )
    lines: list[str] = []
    with open(source, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if number > count:
                break
            parts = line.split()
            expected = f"ILSVRC2012_val_{number:08d}.JPEG"
            if len(parts) != 2 or parts[0] != expected or not parts[1].isdigit():
                raise _MetaError(f"{source}: line {number}: expected '{expected} LABEL', got {line.strip()!r}")
            lines.append(f"{parts[0]} {parts[1]}\n")
    if len(lines) != count:
        raise _MetaError(f"{source}: has {len(lines)} lines, fewer than the {count} images")
    target.write_text("".join(lines), encoding="utf-8")


def _find_marker_dir(root: _pathlib.Path) -> _pathlib.Path:
    """The shallowest directory (depth <= 3) under ``root`` that holds the first validation image."""
    level = [root]
    for _ in range(_MAX_DEPTH + 1):
        for directory in level:
            if (directory / _MARKER).is_file():
                return directory
        level = sorted(p for d in level for p in d.iterdir() if p.is_dir() and not p.is_symlink())
    raise _NotFound(f"no {_MARKER} within {_MAX_DEPTH} levels of the unpacked archive in {root}")
