"""ResNet50 v1.5 in PyTorch with torchvision-compatible state_dict keys, seeded weights and ONNX export."""
# Stable public names (install hooks of model packages import them; keep them):
#
# - ``build_resnet50(num_classes=1000) -> torch.nn.Module``
# - ``seeded_state_dict(seed, num_classes=1000) -> dict[str, torch.Tensor]``
# - ``export_onnx(model, path, opset=17, input_name="input_tensor:0", output_name="softmax_tensor:0", softmax=True)``
#
# v1.5 puts the stride of a down-sampling bottleneck on its 3x3 convolution (v1 had it on the first 1x1).
# The key layout is torchvision's: ``conv1, bn1, layer1..layer4.<block>.{conv,bn}{1,2,3}``,
# ``layerN.0.downsample.0`` (1x1 conv) / ``.1`` (batch norm) and ``fc``, so the MLPerf PyTorch weights
# (resnet50-19c8e357.pth) load into :func:`build_resnet50` with ``strict=True``.
# torch is imported here at module level: import this module only where torch is wanted.
#
# Command line (the install hooks of the synthetic model packages run it in a subprocess):
#   PYTHONPATH=<program base dir> python -m harness.resnet50 --seed N --format onnx|state_dict
#       --out FILE --report FILE [--opset 17] [--num-classes 1000] [--input-name] [--output-name]
# builds the seeded model, writes it (atomically), checks it (ONNX: onnxruntime against torch;
# state_dict: reloaded strictly into the definition with the same tensors) and writes a JSON report
# (seed, weights digest, ...). Exit status: 0 ok, 2 bad option, 3 a check failed (the model file is
# removed), 4 a missing input (torch, or onnxruntime for the ONNX check), 1 anything else; the reason
# is one ``error:`` line on stderr.
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_CHECK_FAILED = 3
EXIT_MISSING_INPUT = 4

try:
    import torch
    from torch import nn
except ImportError as _missing:
    if __name__ != "__main__":
        raise
    print(f"error: cannot import torch, which builds the model: {_missing}", file=sys.stderr)
    raise SystemExit(EXIT_MISSING_INPUT) from None

BLOCKS_PER_STAGE = (3, 4, 6, 3)
STAGE_WIDTHS = (64, 128, 256, 512)
EXPANSION = 4


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride: v1.5), 1x1 expand, plus the shortcut."""

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


class ResNet50(nn.Module):
    """ResNet50 v1.5 taking NCHW float32 images and returning logits of shape (N, num_classes)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        for stage, (blocks, width) in enumerate(zip(BLOCKS_PER_STAGE, STAGE_WIDTHS), start=1):
            layers = []
            for block in range(blocks):
                stride = 2 if (block == 0 and stage > 1) else 1
                layers.append(Bottleneck(in_channels, width, stride))
                in_channels = width * EXPANSION
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_resnet50(num_classes: int = 1000) -> ResNet50:
    """Return an untrained ResNet50 v1.5 (PyTorch default initialisation) in eval mode."""
    return ResNet50(num_classes).eval()


def seeded_state_dict(seed: int, num_classes: int = 1000) -> dict[str, torch.Tensor]:
    """Return deterministic random weights of sane scale for :func:`build_resnet50`.

    Convolutions get Kaiming-normal weights (fan-out, ReLU), batch norms gamma=1 and beta=0, the
    classifier a small normal; then the batch-norm running statistics are calibrated on seeded
    pseudo-images (a few forward passes in training mode) and the classifier is rescaled to
    see standardised features, so that inference-mode activations stay near unit scale and
    different images give different, well-separated predictions.
    The same seed gives the same tensors (on the same torch build). The global RNG is not touched.
    Such a model has meaningless accuracy: it exists to measure speed and to test plumbing.
    """
    generator = torch.Generator().manual_seed(int(seed))
    model = ResNet50(num_classes)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
                module.momentum = None  # cumulative average over the calibration passes
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.05, generator=generator)
                nn.init.normal_(module.bias, std=0.01, generator=generator)
        model.train()
        for _ in range(2):
            model(_pseudo_images(generator, batch=8, side=112))
        model.eval()
        # Standardise the pooled features seen by the classifier: without this a common offset of
        # the post-ReLU features dominates every logit and all images get the same class.
        features = _pooled_features(model, _pseudo_images(generator, batch=16, side=112))
        mean, std = features.mean(0), features.std(0).clamp_min(1e-3)
        weight = model.fc.weight / std
        model.fc.bias.copy_(model.fc.bias - weight @ mean)
        model.fc.weight.copy_(weight)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _pseudo_images(generator: torch.Generator, *, batch: int, side: int) -> torch.Tensor:
    """Seeded images in the range of mean-subtracted pixels: noise at six scales, random contrast per
    scale and a random colour cast, so that their statistics span those of real photos."""
    images = torch.zeros(batch, 3, side, side)
    for cells in (2, 4, 8, 16, 32, 64):
        amplitude = torch.rand(batch, 1, 1, 1, generator=generator) * 80.0
        noise = torch.randn(batch, 3, cells, cells, generator=generator) * amplitude
        images += nn.functional.interpolate(noise, size=(side, side), mode="bilinear", align_corners=False)
    images += torch.rand(batch, 3, 1, 1, generator=generator) * 160.0 - 80.0
    return images.clamp(-125.0, 135.0)


def _pooled_features(model: ResNet50, x: torch.Tensor) -> torch.Tensor:
    """The 2048 pooled features that ``model.fc`` receives for the batch ``x``."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return torch.flatten(model.avgpool(x), 1)


class _WithSoftmax(nn.Module):
    """Wraps a classifier so that its exported output is a softmax (the argmax is unchanged)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    opset: int = 17,
    input_name: str = "input_tensor:0",
    output_name: str = "softmax_tensor:0",
    softmax: bool = True,
    image_size: int = 224,
) -> Path:
    """Export ``model`` (NCHW float32 in, scores out) to ONNX at ``path`` with a dynamic batch axis.

    The names default to those of the MLPerf ResNet50 ONNX model; with ``softmax`` the output is a
    softmax over the logits, as the name says. The file is written atomically. Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = _WithSoftmax(model) if softmax else model
    module.eval()
    dummy = torch.zeros(1, 3, image_size, image_size, dtype=torch.float32)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # the TorchScript-based exporter: the torch.export-based default needs onnxscript, which
        # the project does not depend on; its deprecation warning says nothing actionable here
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module,
                (dummy,),
                tmp_name,
                dynamo=False,
                opset_version=opset,
                input_names=[input_name],
                output_names=[output_name],
                dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                do_constant_folding=True,
            )
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


# ---------------------------------------------------------------------------------------------- command line
FORMATS = ("onnx", "state_dict")


class CheckFailed(Exception):
    """A written model does not reproduce the one built here."""


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors (name, dtype, shape, bytes) in key order: equal iff the weights are equal."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def save_state_dict(state: dict[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (mode 0644); returns the path.

    torch.save gets a file object, not a name, so the record prefix inside the archive is always
    'archive' whatever the file is called.
    """
    from .fileio import write_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, lambda handle: torch.save(state, handle))


def check_onnx(model: nn.Module, path: Path, *, input_name: str, output_name: str, seed: int,
               tolerance: float) -> float:
    """Compare onnxruntime on ``path`` with softmax(torch) on two seeded images; return the max abs diff.

    Raises CheckFailed on other input/output names, other shapes, or a difference over ``tolerance``;
    ImportError when onnxruntime is missing.
    """
    import numpy as np
    import onnxruntime

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


def check_state_dict(path: Path, expected_digest: str, *, num_classes: int) -> None:
    """Load ``path`` (weights only) into a fresh definition, strictly; CheckFailed if anything differs."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        build_resnet50(num_classes=num_classes).load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckFailed(f"{path} does not load into build_resnet50(): {exc}") from exc
    if weights_digest(state) != expected_digest:
        raise CheckFailed(f"{path} holds other weights than the ones saved")


def write_seeded(args: argparse.Namespace) -> dict[str, Any]:
    """Build the seeded model, write it in ``args.format`` to ``args.out`` and check it; return the report.

    Raises CheckFailed (the written file is removed first) or ImportError.
    """
    state = seeded_state_dict(args.seed, num_classes=args.num_classes)
    report: dict[str, Any] = {"accuracy_meaningless": True, "format": args.format, "num_classes": args.num_classes,
                              "seed": args.seed, "tensors": len(state), "torch_version": torch.__version__,
                              "weights_sha256": weights_digest(state)}
    try:
        if args.format == "onnx":
            model = build_resnet50(num_classes=args.num_classes)
            model.load_state_dict(state, strict=True)
            export_onnx(model, args.out, opset=args.opset, input_name=args.input_name,
                        output_name=args.output_name, softmax=True)
            report["max_abs_diff"] = check_onnx(model, args.out, input_name=args.input_name,
                                                output_name=args.output_name, seed=args.seed,
                                                tolerance=args.tolerance)
            report["opset"] = args.opset
            report["onnx_sha256"] = hashlib.sha256(args.out.read_bytes()).hexdigest()
        else:
            save_state_dict(state, args.out)
            check_state_dict(args.out, report["weights_sha256"], num_classes=args.num_classes)
    except CheckFailed:
        args.out.unlink(missing_ok=True)
        raise
    return report


def build_parser() -> argparse.ArgumentParser:
    """Options of ``python -m harness.resnet50``."""
    p = argparse.ArgumentParser(
        prog="python -m harness.resnet50",
        description="Write ResNet50 v1.5 with seeded RANDOM weights (accuracy meaningless) as ONNX or a "
                    "state_dict, check it and write a JSON report.",
    )
    p.add_argument("--seed", type=int, required=True, help="the same seed gives the same weights")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", type=Path, required=True, help="the model file to write")
    p.add_argument("--report", type=Path, required=True, help="the JSON report to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--input-name", default="input_tensor:0", help="ONNX input name")
    p.add_argument("--output-name", default="softmax_tensor:0", help="ONNX output name (a softmax)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="ONNX check: largest max abs diff to torch")
    return p


def _failure(exc: Exception) -> tuple[int, str]:
    """The exit status of a failure and the start of its error line."""
    if isinstance(exc, CheckFailed):
        return EXIT_CHECK_FAILED, "check failed"
    if isinstance(exc, ImportError):
        return EXIT_MISSING_INPUT, "a module the model needs cannot be imported"
    return 1, "cannot write the model or its report"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m harness.resnet50``; returns the exit status (see the module comment)."""
    from .fileio import write_json_atomic

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num_classes <= 0:
        parser.error(f"--num-classes must be positive, got {args.num_classes}")
    try:
        report = write_seeded(args)
        args.report.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.report, report)
    except (CheckFailed, ImportError, OSError) as exc:
        status, what = _failure(exc)
        print(f"error: {what}: {exc}", file=sys.stderr)
        return status
    print(f"wrote {args.out} ({args.format}, seed {args.seed}, weights sha256 {report['weights_sha256']}) "
          f"and {args.report}; accuracy is meaningless", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
