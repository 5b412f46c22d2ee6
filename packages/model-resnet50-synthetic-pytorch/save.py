"""Save the harness's ResNet50 v1.5 with seeded RANDOM weights as a state_dict .pth (performance work only)."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

EXIT_CHECK_FAILED = 3
EXIT_MISSING_INPUT = 4


class CheckFailed(Exception):
    """The saved file does not load back into the definition with the same weights."""


def load_harness(base: Path) -> Any:
    """Import ``harness.resnet50`` from the program base directory ``base``."""
    if not (base / "harness" / "resnet50.py").is_file():
        raise FileNotFoundError(f"{base / 'harness' / 'resnet50.py'} does not exist")
    sys.path.insert(0, str(base))
    from harness import resnet50

    return resnet50


def weights_digest(state_dict: dict) -> str:
    """sha256 over the tensors (name, dtype, shape, bytes) in key order: equal iff the weights are equal."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def save_state_dict(state: dict, path: Path) -> None:
    """Write ``state`` to ``path`` atomically, readable by all (the record prefix inside is always 'archive')."""
    import torch

    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:  # a file object, not a name: the zip record prefix must not depend on it
        torch.save(state, handle)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def check_reload(resnet50: Any, path: Path, expected_digest: str, *, num_classes: int) -> None:
    """Load ``path`` (weights only) into a fresh definition, strictly; raise CheckFailed if anything differs."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    model = resnet50.build_resnet50(num_classes=num_classes)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckFailed(f"{path} does not load into build_resnet50(): {exc}") from exc
    if weights_digest(state) != expected_digest:
        raise CheckFailed(f"{path} holds other weights than the ones saved")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: build, seed, save, reload; exit 3 on a failed check, 4 if the harness is missing."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", type=Path, required=True, help="program base dir that holds harness/resnet50.py")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--num-classes", type=int, default=1000)
    args = parser.parse_args(argv)
    try:
        resnet50 = load_harness(args.base)
    except (FileNotFoundError, ImportError) as exc:
        print(f"error: cannot import harness.resnet50 from {args.base}: {exc}", file=sys.stderr)
        return EXIT_MISSING_INPUT
    state = resnet50.seeded_state_dict(args.seed, num_classes=args.num_classes)
    digest = weights_digest(state)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_state_dict(state, args.out)
    try:
        check_reload(resnet50, args.out, digest, num_classes=args.num_classes)
    except CheckFailed as exc:
        args.out.unlink(missing_ok=True)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    report = {
        "accuracy_meaningless": True,
        "num_classes": args.num_classes,
        "seed": args.seed,
        "tensors": len(state),
        "torch_version": __import__("torch").__version__,
        "weights_sha256": digest,
    }
    tmp = args.report.with_name(args.report.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, args.report)
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
