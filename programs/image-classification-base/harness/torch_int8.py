"""Quantize our ResNet50 v1.5 (a state_dict) to an int8 TorchScript model with PyTorch's FX graph-mode flow."""
# Static post-training quantization for the x86 engine (fbgemm kernels): per-channel int8 weights, uint8
# activations calibrated on the given inputs, traced and saved as TorchScript, the format of the seed's
# int8 model, which the pytorch backend loads as such.
#
# Command line (the install hook of model-resnet50-synthetic-pytorch-int8 runs it in a subprocess):
#   PYTHONPATH=<program base dir> python -m harness.torch_int8 --state-dict IN.pth --out OUT.pt --report R.json
#       [--calibration-batches 4]
# Exit: 0 ok, 2 bad option, 3 the int8 model disagrees with fp32 beyond --min-agreement, 4 missing input.
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .resnet50 import build_resnet50

EXIT_CHECK_FAILED = 3
EXIT_MISSING_INPUT = 4


def quantize_resnet50(state: dict[str, torch.Tensor], calibration: torch.Tensor) -> torch.jit.ScriptModule:
    """The int8 TorchScript module of ResNet50 with ``state``, calibrated on ``calibration`` (N, 3, 224, 224)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    model = build_resnet50(num_classes=int(state["fc.weight"].shape[0]))
    model.load_state_dict(state, strict=True)
    model.eval()
    with warnings.catch_warnings():  # the FX flow warns that it is in maintenance; it is what ships with torch
        warnings.simplefilter("ignore")
        prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), example_inputs=(calibration[:1],))
        with torch.inference_mode():
            for start in range(0, len(calibration), 8):
                prepared(calibration[start:start + 8])
        quantized = convert_fx(prepared)
        with torch.inference_mode():
            return torch.jit.freeze(torch.jit.trace(quantized, calibration[:1]))


def pseudo_images(seed: int, count: int) -> torch.Tensor:
    """Seeded inputs with the value range of the mlperf-resnet50 profile (pixels minus the means)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.uniform(-124.0, 152.0, size=(count, 3, 224, 224)).astype(np.float32))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.torch_int8", description=__doc__)
    p.add_argument("--state-dict", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--report", required=True)
    p.add_argument("--calibration-images", type=int, default=16)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    source, out = Path(args.state_dict), Path(args.out)
    if not source.is_file():
        print(f"error: state_dict not found: {source}", file=sys.stderr)
        return EXIT_MISSING_INPUT
    state = torch.load(source, map_location="cpu", weights_only=True)
    scripted = quantize_resnet50(state, pseudo_images(1, args.calibration_images))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.tmp")
    scripted.save(os.fspath(partial))
    os.replace(partial, out)
    report = {"schema_version": 1, "source": os.fspath(source), "engine": "x86", "flow": "torch.ao FX graph mode",
              "calibration_images": args.calibration_images, "calibration": "seeded pseudo-images (random weights)",
              "int8_sha256": hashlib.sha256(out.read_bytes()).hexdigest()}
    Path(args.report).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
