"""Copy labelled photos out of installed pip packages into a 3-channel image set with a label-set val_map."""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

EXIT_MISSING_INPUT = 4
EXIT_BAD_IMAGE = 5

# Formats written as they are when the source is already 8-bit RGB; anything else is re-encoded as PNG.
_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


class MissingInput(Exception):
    """A package or a file inside it is not installed."""


class BadImage(Exception):
    """A source file is not an image that can become a 3-channel photo."""


def package_dir(module: str) -> Path:
    """Directory of an installed top-level package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingInput(f"Python package '{module}' is not installed for {sys.executable}")
    return Path(list(spec.submodule_search_locations)[0])


def prepare_image(source: Path, target: Path) -> dict:
    """Write ``source`` to ``target`` as an 8-bit 3-channel image; return what was done.

    An 8-bit RGB source of the target's format is copied byte for byte; any other mode
    (grey, palette, alpha) is converted to RGB and re-encoded losslessly as PNG.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as image:
            image.load()
            mode, size, fmt = image.mode, image.size, image.format
            converted = image.convert("RGB") if mode != "RGB" else None
    except (OSError, UnidentifiedImageError) as exc:
        raise BadImage(f"{source} is not a readable image: {exc}") from exc
    wanted = _PIL_FORMATS.get(target.suffix.lower())
    if wanted is None:
        raise BadImage(f"{target.name}: the sample set keeps only .png and .jpg files")
    tmp = target.with_name(target.name + ".tmp")
    if converted is None and fmt == wanted:
        shutil.copyfile(source, tmp)
        action = "copied"
    else:
        if wanted != "PNG":
            raise BadImage(f"{source} ({fmt}, {mode}) would need lossy re-encoding; name its target .png")
        (converted or Image.open(source).convert("RGB")).save(tmp, format="PNG", optimize=True)
        action = f"converted {fmt} {mode} to PNG RGB"
    os.replace(tmp, target)
    return {"action": action, "height": size[1], "source_mode": mode, "width": size[0]}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def prepare(images: list[dict], out: Path) -> dict:
    """Write every image of the spec into ``out/images`` and the label-set val_map into ``out/val_map.txt``."""
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"images": []}
    lines = []
    for item in images:
        source = package_dir(item["module"]) / item["path"]
        if not source.is_file():
            raise MissingInput(f"{source} is missing from the installed package {item['package']}")
        target = image_dir / item["name"]
        record = prepare_image(source, target)
        labels = sorted(int(label) for label in item["labels"])
        record.update(
            {
                "labels": labels,
                "name": item["name"],
                "package": item["package"],
                "package_version": _version(item["package"]),
                "sha256": _sha256(target),
                "source": f"{item['module']}/{item['path']}",
            }
        )
        manifest["images"].append(record)
        lines.append(f"{item['name']} {','.join(str(label) for label in labels)}\n")
    _write_text(out / "val_map.txt", "".join(lines))
    _write_text(out / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: ``prepare.py --out DIR --spec JSON``; exit 4 if a package is missing, 5 on a bad image."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--spec", required=True, help="JSON list of {name, package, module, path, labels}")
    args = parser.parse_args(argv)
    try:
        manifest = prepare(json.loads(args.spec), args.out)
    except MissingInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MISSING_INPUT
    except BadImage as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_IMAGE
    except ImportError as exc:
        print(f"error: {exc}; the sample set needs Pillow (it comes with matplotlib and scikit-image)",
              file=sys.stderr)
        return EXIT_MISSING_INPUT
    print(json.dumps({"images": len(manifest["images"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
