"""TensorFlow backend: a frozen GraphDef (.pb) or a SavedModel directory, on CPU, NHWC or NCHW input."""
# Frozen graphs are the MLPerf ResNet50 v1.5 format (input ``input_tensor:0``, output ``ArgMax:0``, 1001
# classes, offset -1); our converted models have the same input name and also a ``logits:0`` output.
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .backends import Backend, _first_line, require_runtime
from .errors import InputNotFound, ModelError, PrecisionUnsupported, UsageError

DEFAULT_INPUT = "input_tensor:0"
DEFAULT_OUTPUT = "ArgMax:0"


class TensorFlowBackend(Backend):
    """TensorFlow with ``threads`` intra-op threads and one inter-op thread; one concrete function per model."""

    name = "tensorflow"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._function: Any = None
        self._tf: Any = None

    @property
    def version(self) -> str:
        return str(require_runtime("tensorflow", "tf", self.name).version.VERSION)

    def load(self, model_path: str | os.PathLike | None) -> None:
        if model_path is None:
            raise UsageError("the tensorflow backend needs --model")
        path = Path(model_path)
        if not path.exists():
            raise InputNotFound(f"model file not found: {path}")
        if self.precision not in ("fp32", "int8"):
            raise PrecisionUnsupported(f"the tensorflow backend runs the model's own precision, not {self.precision}")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        tf = require_runtime("tensorflow", "tf", self.name)
        _set_threads(tf, self.threads)
        self._tf = tf
        self._function = self._saved_model(path) if path.is_dir() else self._frozen_graph(path)
        self.model_path = path

    def _frozen_graph(self, path: Path) -> Any:
        tf = self._tf
        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(path.read_bytes())
        except Exception as exc:  # protobuf's DecodeError
            raise ModelError(f"cannot read TensorFlow frozen graph {path}: {_first_line(exc)}") from None
        in_name = _tensor_name(self.input_name or DEFAULT_INPUT)
        out_name = _tensor_name(self.output_name or DEFAULT_OUTPUT)
        nodes = {node.name for node in graph_def.node}
        for what, name in (("input", in_name), ("output", out_name)):
            if name.split(":")[0] not in nodes:
                raise ModelError(f"frozen graph {path} has no {what} {name!r}")
        wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
        try:
            function = wrapped.prune(wrapped.graph.as_graph_element(in_name), wrapped.graph.as_graph_element(out_name))
        except Exception as exc:  # ValueError, KeyError from graph lookups
            raise ModelError(f"cannot use frozen graph {path}: {_first_line(exc)}") from None
        self._check_channels(wrapped.graph.as_graph_element(in_name).shape, path)
        self.input_name, self.output_name = in_name, out_name
        return function

    def _saved_model(self, path: Path) -> Any:
        tf = self._tf
        try:
            loaded = tf.saved_model.load(os.fspath(path))
            function = loaded.signatures["serving_default"]
        except Exception as exc:  # OSError, KeyError, tf errors
            raise ModelError(f"cannot load SavedModel {path}: {_first_line(exc)}") from None
        self._keep_alive = loaded
        spec = function.structured_input_signature[1]
        if len(spec) != 1:
            raise ModelError(f"SavedModel {path}: serving_default takes {len(spec)} inputs, the harness feeds one")
        (arg, tensor_spec), = spec.items()
        self._check_channels(tensor_spec.shape, path)
        outputs = list(function.structured_outputs)
        out_key = self.output_name.split(":")[0] if self.output_name else outputs[0]
        if out_key not in outputs:
            raise ModelError(f"SavedModel {path} has no output {out_key!r}; outputs: {', '.join(outputs)}")
        self.input_name, self.output_name = arg, out_key
        return lambda x: function(**{arg: x})[out_key]

    def _check_channels(self, shape: Any, path: Path) -> None:
        dims = list(shape) if shape.rank is not None else []
        if len(dims) == 4:
            channels = dims[1] if self.layout == "NCHW" else dims[3]
            if channels is not None and int(channels) != 3:
                other = "NHWC" if self.layout == "NCHW" else "NCHW"
                raise ModelError(f"TensorFlow model {path}: input shape {dims} is not {self.layout}; "
                                 f"try --data-layout {other}")
        if dims and dims[0] is not None and int(dims[0]) > 0:
            self.max_batch = int(dims[0])

    def outputs(self, batch: np.ndarray) -> np.ndarray:
        return self._function(self._tf.constant(batch)).numpy()


def _tensor_name(name: str) -> str:
    return name if ":" in name else f"{name}:0"


def _set_threads(tf: Any, threads: int) -> None:
    """Set the thread pools; a second model in one process finds them fixed and keeps them."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # "cannot be modified after initialization"
        pass
