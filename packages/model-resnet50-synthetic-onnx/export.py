"""Export the harness's ResNet50 v1.5 with seeded RANDOM weights to ONNX (for performance work only)."""
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
    """The exported graph does not reproduce the torch model."""


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


def check_onnx(model: Any, path: Path, *, input_name: str, output_name: str, seed: int, tolerance: float) -> float:
    """Compare onnxruntime on ``path`` with softmax(torch) on two seeded images; return the max abs diff.

    Raises CheckFailed on other input/output names, other shapes, or a difference over ``tolerance``.
    """
    import numpy as np
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if names != ([input_name], [output_name]):
        raise CheckFailed(f"{path}: inputs/outputs are {names}, expected ([{input_name}], [{output_name}])")
    batch = np.random.default_rng(seed).uniform(-128.0, 128.0, size=(2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(batch)), dim=1).numpy()
    actual = session.run([output_name], {input_name: batch})[0]
    if actual.shape != expected.shape:
        raise CheckFailed(f"{path}: output shape {actual.shape}, torch gives {expected.shape}")
    diff = float(np.abs(actual - expected).max())
    if not diff <= tolerance:
        raise CheckFailed(f"{path}: ONNX differs from torch by max abs {diff:.3g} (tolerance {tolerance:g})")
    return diff


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: build, seed, export, check; exit 3 on a failed check, 4 if the harness is missing."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", type=Path, required=True, help="program base dir that holds harness/resnet50.py")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--input-name", default="input_tensor:0")
    parser.add_argument("--output-name", default="softmax_tensor:0")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args(argv)
    try:
        resnet50 = load_harness(args.base)
    except (FileNotFoundError, ImportError) as exc:
        print(f"error: cannot import harness.resnet50 from {args.base}: {exc}", file=sys.stderr)
        return EXIT_MISSING_INPUT
    state = resnet50.seeded_state_dict(args.seed, num_classes=args.num_classes)
    model = resnet50.build_resnet50(num_classes=args.num_classes)
    model.load_state_dict(state, strict=True)
    model.eval()
    resnet50.export_onnx(
        model, args.out, opset=args.opset, input_name=args.input_name, output_name=args.output_name, softmax=True
    )
    os.chmod(args.out, 0o644)
    try:
        diff = check_onnx(
            model, args.out, input_name=args.input_name, output_name=args.output_name,
            seed=args.seed, tolerance=args.tolerance,
        )
    except CheckFailed as exc:
        args.out.unlink(missing_ok=True)
        print(f"error: export check failed: {exc}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    report = {
        "accuracy_meaningless": True,
        "max_abs_diff": diff,
        "num_classes": args.num_classes,
        "onnx_sha256": _sha256(args.out),
        "opset": args.opset,
        "seed": args.seed,
        "torch_version": __import__("torch").__version__,
        "weights_sha256": weights_digest(state),
    }
    tmp = args.report.with_name(args.report.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, args.report)
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
