"""Convert a convolutional ONNX classifier (ResNet50, EfficientNet-Lite) into a frozen NHWC TensorFlow graph."""
# The model is first folded by onnxruntime's basic (ONNX-standard) optimisations, which fold batch norms
# into convolutions and the exporters' shape arithmetic into constants, leaving a few operator types.
# Every 4-D tensor is kept NHWC; an operator that reads a 4-D tensor as flat data (Reshape, Flatten) sees
# it transposed back to NCHW first, so the ONNX semantics hold exactly. The frozen graph's input is
# ``input_tensor:0`` (N, H, W, 3, float32); its outputs are the ONNX output under its own name and ``ArgMax:0``.
#
# Command line (the install hooks of the TF model packages run it in a subprocess):
#   PYTHONPATH=<program base dir> python -m harness.onnx_to_tf --onnx IN.onnx --out OUT.pb --report R.json
# writes the graph atomically, checks it against onnxruntime on pseudo-random images (max abs difference
# below --tolerance) and writes a JSON report. Exit: 0 ok, 2 bad option, 3 check failed, 4 missing input.
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

EXIT_CHECK_FAILED = 3
EXIT_MISSING_INPUT = 4
INPUT_NAME = "input_tensor"
ARGMAX_NAME = "ArgMax"


class Unsupported(Exception):
    """The ONNX graph holds an operator or attribute this converter does not handle."""


def folded_onnx(path: Path) -> Any:
    """The ONNX model after onnxruntime's basic optimisations (constant folding, Conv+BN fusion)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="onnx-fold-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = os.fspath(Path(tmp) / "folded.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _explicit_pads(pads: Sequence[int]) -> list[list[int]]:
    half = len(pads) // 2
    return [[0, 0], *[[int(pads[i]), int(pads[i + half])] for i in range(half)], [0, 0]]


class _Converter:
    """Builds the TF computation node by node; constants come from the ONNX initialisers."""

    def __init__(self, model: Any) -> None:
        import onnx.numpy_helper

        self.model = model
        self.constants = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type == "Constant":
                self.constants[node.output[0]] = onnx.numpy_helper.to_array(_attrs(node)["value"])

    def __call__(self, tf: Any, x: Any) -> dict[str, Any]:
        graph = self.model.graph
        inputs = [i.name for i in graph.input if i.name not in self.constants]
        values: dict[str, Any] = {inputs[0]: x}
        for node in graph.node:
            if node.op_type == "Constant":
                continue
            handler = getattr(self, f"_op_{node.op_type}", None)
            if handler is None:
                raise Unsupported(f"ONNX operator {node.op_type} ({node.name}) is not supported")
            args = [values[n] if n in values else self.constants.get(n) for n in node.input]
            values[node.output[0]] = handler(tf, args, _attrs(node))
        return {o.name: values[o.name] for o in graph.output}

    def _op_Conv(self, tf: Any, args: list, attrs: dict) -> Any:
        x, weight = args[0], args[1]
        if not isinstance(weight, np.ndarray) or weight.ndim != 4:
            raise Unsupported("Conv needs a constant 2-D kernel")
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise Unsupported("Conv auto_pad is not supported")
        group = int(attrs.get("group", 1))
        strides = [1, *attrs.get("strides", [1, 1]), 1]
        dilations = list(attrs.get("dilations", [1, 1]))
        pads = attrs.get("pads", [0, 0, 0, 0])
        if any(pads):
            x = tf.pad(x, _explicit_pads(pads))
        kernel = weight.transpose(2, 3, 1, 0)  # O, I/g, kh, kw -> kh, kw, I/g, O
        out_channels, in_per_group = weight.shape[0], weight.shape[1]
        if group == 1:
            y = tf.nn.conv2d(x, tf.constant(kernel), strides=strides, padding="VALID", dilations=dilations)
        elif in_per_group == 1 and group == out_channels:
            depthwise = kernel.transpose(0, 1, 3, 2)  # kh, kw, 1, C -> kh, kw, C, 1
            y = tf.nn.depthwise_conv2d(x, tf.constant(depthwise), strides=strides, padding="VALID",
                                       dilations=dilations)
        else:
            raise Unsupported(f"grouped Conv with {group} groups is not supported")
        if len(args) > 2 and args[2] is not None:
            y = tf.nn.bias_add(y, tf.constant(args[2]))
        return y

    def _op_Relu(self, tf: Any, args: list, attrs: dict) -> Any:
        return tf.nn.relu(args[0])

    def _op_Clip(self, tf: Any, args: list, attrs: dict) -> Any:
        low = args[1] if len(args) > 1 and args[1] is not None else attrs.get("min", -np.inf)
        high = args[2] if len(args) > 2 and args[2] is not None else attrs.get("max", np.inf)
        return tf.clip_by_value(args[0], float(low), float(high))

    def _op_Add(self, tf: Any, args: list, attrs: dict) -> Any:
        return tf.add(*[tf.constant(a) if isinstance(a, np.ndarray) else a for a in args])

    def _op_MaxPool(self, tf: Any, args: list, attrs: dict) -> Any:
        x = args[0]
        pads = attrs.get("pads", [0, 0, 0, 0])
        if any(pads):
            x = tf.pad(x, _explicit_pads(pads), constant_values=-np.inf)
        kernel = [1, *attrs["kernel_shape"], 1]
        return tf.nn.max_pool2d(x, kernel, [1, *attrs.get("strides", [1, 1]), 1], padding="VALID")

    def _op_GlobalAveragePool(self, tf: Any, args: list, attrs: dict) -> Any:
        return tf.reduce_mean(args[0], axis=[1, 2], keepdims=True)

    def _as_nchw(self, tf: Any, x: Any) -> Any:
        return tf.transpose(x, [0, 3, 1, 2]) if x.shape.rank == 4 else x

    def _op_Reshape(self, tf: Any, args: list, attrs: dict) -> Any:
        shape = [int(d) for d in args[1]]
        x = self._as_nchw(tf, args[0])
        # ONNX: 0 copies the input dimension; the batch stays dynamic
        dims = [tf.shape(x)[i] if d == 0 else d for i, d in enumerate(shape)]
        return tf.reshape(x, tf.stack(dims) if any(not isinstance(d, int) for d in dims) else dims)

    def _op_Flatten(self, tf: Any, args: list, attrs: dict) -> Any:
        if int(attrs.get("axis", 1)) != 1:
            raise Unsupported("Flatten on an axis other than 1 is not supported")
        x = self._as_nchw(tf, args[0])
        return tf.reshape(x, [-1, int(np.prod(x.shape[1:]))])

    def _op_Gemm(self, tf: Any, args: list, attrs: dict) -> Any:
        a, b = args[0], args[1]
        if attrs.get("transA", 0):
            raise Unsupported("Gemm with transA is not supported")
        b = b.T if attrs.get("transB", 0) else b
        y = tf.matmul(a, tf.constant(b * np.float32(attrs.get("alpha", 1.0))))
        if len(args) > 2 and args[2] is not None:
            y = y + tf.constant(args[2] * np.float32(attrs.get("beta", 1.0)))
        return y

    def _op_Softmax(self, tf: Any, args: list, attrs: dict) -> Any:
        return tf.nn.softmax(args[0], axis=int(attrs.get("axis", -1)))


def convert(onnx_path: Path, side: int = 224) -> tuple[bytes, str]:
    """The frozen GraphDef bytes for ``onnx_path`` and the name of its score output (``name:0``)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    converter = _Converter(folded_onnx(onnx_path))
    out_name = converter.model.graph.output[0].name.split(":")[0]

    @tf.function(input_signature=[tf.TensorSpec([None, side, side, 3], tf.float32, name=INPUT_NAME)])
    def model(input_tensor: Any) -> dict[str, Any]:
        scores = next(iter(converter(tf, input_tensor).values()))
        return {"scores": tf.identity(scores, name=out_name),
                "ids": tf.argmax(scores, axis=1, name=ARGMAX_NAME)}

    frozen = convert_variables_to_constants_v2(model.get_concrete_function())
    return frozen.graph.as_graph_def().SerializeToString(), f"{out_name}:0"


def _pseudo_images(seed: int, count: int, side: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2.0, 2.0, size=(count, 3, side, side)).astype(np.float32)


def check_against_onnx(graph_path: Path, onnx_path: Path, out_name: str, *, seed: int = 0, count: int = 2,
                       side: int = 224, run_graph: Callable[..., np.ndarray] | None = None) -> float:
    """Largest absolute difference between the frozen graph and onnxruntime on pseudo-random NCHW images."""
    import onnxruntime as ort
    import tensorflow as tf

    images = _pseudo_images(seed, count, side)
    session = ort.InferenceSession(os.fspath(onnx_path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: images})[0]
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_path.read_bytes())
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    function = wrapped.prune(wrapped.graph.as_graph_element(f"{INPUT_NAME}:0"),
                             wrapped.graph.as_graph_element(out_name))
    got = function(tf.constant(images.transpose(0, 2, 3, 1))).numpy()
    return float(np.abs(got - expected.reshape(got.shape)).max())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.onnx_to_tf", description=__doc__)
    p.add_argument("--onnx", required=True, help="the fp32 ONNX model to convert")
    p.add_argument("--out", required=True, help="the frozen graph (.pb) to write")
    p.add_argument("--report", required=True, help="JSON report to write")
    p.add_argument("--side", type=int, default=224)
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest abs difference to onnxruntime allowed")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    source, out = Path(args.onnx), Path(args.out)
    if not source.is_file():
        print(f"error: ONNX model not found: {source}", file=sys.stderr)
        return EXIT_MISSING_INPUT
    try:
        data, out_name = convert(source, args.side)
    except Unsupported as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.tmp")
    partial.write_bytes(data)
    os.replace(partial, out)
    difference = check_against_onnx(out, source, out_name, side=args.side)
    report = {"schema_version": 1, "source": os.fspath(source), "source_sha256": _sha256(source),
              "graph_sha256": _sha256(out), "input": f"{INPUT_NAME}:0", "output": out_name,
              "argmax": f"{ARGMAX_NAME}:0", "layout": "NHWC", "max_abs_difference_to_onnx": difference,
              "tolerance": args.tolerance}
    Path(args.report).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if difference > args.tolerance:
        out.unlink(missing_ok=True)
        print(f"error: converted graph differs from onnxruntime by {difference:.3g} > {args.tolerance}",
              file=sys.stderr)
        return EXIT_CHECK_FAILED
    return 0


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
