"""Install hook: gather the labelled sample photos from installed pip packages (in a subprocess)."""

from __future__ import annotations

import json as _json
import pathlib as _pathlib
import typing as _typing

from ckx.software import hooks as _hooks
from ckx.core.errors import CkxError as _CkxError
from ckx.core.errors import IntegrityError as _IntegrityError
from ckx.core.errors import MetaError as _MetaError

_TIMEOUT_S = 300
_SPEC_KEYS = ("name", "package", "module", "path", "labels")
_SINGLE_LABEL_MAP = "val_map_single_label.txt"


def install(
    *,
    install_dir: _pathlib.Path,
    package_dir: _pathlib.Path,
    meta: dict,
    env: dict[str, str],
    python: str,
    info: _typing.Callable[[str], None],
) -> dict[str, str] | None:
    """Write ``images/`` and ``val_map.txt`` into ``install_dir``; raise a CkxError if a photo is missing."""
    images = _image_spec(meta)
    spec = [{key: item[key] for key in _SPEC_KEYS} for item in images]
    argv = [python, str(package_dir / "prepare.py"), "--out", str(install_dir), "--spec", _json.dumps(spec)]
    info(f"copying {len(images)} labelled photos from scikit-image and matplotlib")
    _hooks.run_script(
        argv,
        env=env,
        timeout=_TIMEOUT_S,
        what="sample dataset preparation",
        integrity_codes=(5,),
        hints={4: "pip install scikit-image matplotlib (they ship the photos)"},
    )
    _verify(install_dir, images)
    _write_single_label_map(install_dir, images)
    return {"CK_ENV_DATASET_IMAGENET_COUNT": str(len(images))}


def _write_single_label_map(install_dir: _pathlib.Path, images: list[dict]) -> None:
    """``val_map_single_label.txt``: the same photos in the same order, each with its one primary label.

    The official accuracy script reads one integer label per line; submission runs score against this file.
    """
    lines = [f"{item['name']} {item['primary']}" for item in images]
    (install_dir / _SINGLE_LABEL_MAP).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _image_spec(meta: dict) -> list[dict]:
    """The meta's ``images`` list, checked: unique names, every key present, labels in 0..999."""
    images = meta.get("images")
    if not isinstance(images, list) or not images:
        raise _MetaError(f"{meta.get('alias', 'package')}: meta.json needs a non-empty 'images' list")
    names = set()
    for index, item in enumerate(images):
        missing = [key for key in _SPEC_KEYS if key not in item]
        if missing:
            raise _MetaError(f"meta.json images[{index}] lacks {', '.join(missing)}")
        labels = item["labels"]
        if not labels or not all(isinstance(x, int) and 0 <= x < 1000 for x in labels):
            raise _MetaError(f"meta.json images[{index}] ({item['name']}): labels must be ImageNet-1k ids 0..999")
        primary = item.get("primary")
        if not isinstance(primary, int) or primary not in labels:
            raise _MetaError(f"meta.json images[{index}] ({item['name']}): 'primary' must be one of its labels")
        if item["name"] in names:
            raise _MetaError(f"meta.json images: duplicate name {item['name']}")
        names.add(item["name"])
    return images


def _verify(install_dir: _pathlib.Path, images: list[dict]) -> None:
    """Check the written val_map names every image, in order, with the declared label set."""
    val_map = install_dir / "val_map.txt"
    try:
        lines = val_map.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise _CkxError(f"sample dataset preparation wrote no val_map: {exc}") from exc
    expected = [f"{item['name']} {','.join(str(x) for x in sorted(item['labels']))}" for item in images]
    if lines != expected:
        raise _IntegrityError(f"{val_map} does not match the images declared in meta.json")
    absent = [item["name"] for item in images if not (install_dir / "images" / item["name"]).is_file()]
    if absent:
        raise _IntegrityError(f"sample dataset preparation did not write {', '.join(absent)}")
