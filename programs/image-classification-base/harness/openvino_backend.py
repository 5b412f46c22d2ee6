"""OpenVINO backend: ONNX models (fp32, or QDQ int8 run as int8) on the CPU plugin with precision and stream hints."""
# The SUT calls ``predict`` from one thread at a time. Under the throughput hint (Offline, Server) a batch is
# split across the compiled model's infer requests, which run in parallel on their streams; under the
# latency hint (SingleStream, MultiStream) one request runs the whole batch on every thread.
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from .backends import Backend, _first_line, _require_file, require_runtime
from .cpu import has_bf16
from .errors import ModelError, PrecisionUnsupported

THROUGHPUT_SCENARIOS = ("Offline", "Server")
# --precision -> OpenVINO's inference precision hint; int8 comes from the model's QDQ nodes, the rest of
# the graph then runs in the plugin's default precision for this CPU.
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": None}


class OpenVINOBackend(Backend):
    """OpenVINO CPU plugin: ``threads`` inference threads, latency or throughput hint from the scenario."""

    name = "openvino"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._compiled: Any = None
        self._requests: Any = None
        self._output: Any = None
        self.streams = 1

    @property
    def version(self) -> str:
        return str(require_runtime("openvino", "openvino", self.name).get_version())

    def load(self, model_path: str | os.PathLike | None) -> None:
        path = _require_file(model_path, self.name)
        ov = require_runtime("openvino", "openvino", self.name)
        config = self._config(path, ov)
        core = ov.Core()
        try:
            model = core.read_model(os.fspath(path))
            compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError with long multi-line texts
            raise ModelError(f"OpenVINO cannot compile {path}: {_first_line(exc)}") from None
        self._bind(compiled, path, ov)
        self.model_path = path

    def _config(self, path: Path, ov: Any) -> dict[str, Any]:
        if self.precision not in PRECISION_HINTS:
            raise PrecisionUnsupported(f"the openvino backend runs fp32, bf16 or int8, not {self.precision!r}")
        if self.precision == "bf16" and not has_bf16():
            raise PrecisionUnsupported("bf16 needs a CPU with AMX or AVX-512 bf16; this CPU has neither",
                                       hint="run fp32, or int8 with --dep_add_tags.model=int8")
        throughput = self.scenario in THROUGHPUT_SCENARIOS
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "THROUGHPUT" if throughput else "LATENCY",
            "INFERENCE_NUM_THREADS": self.threads,
        }
        hint = PRECISION_HINTS[self.precision]
        if hint:
            config["INFERENCE_PRECISION_HINT"] = hint
        if self.compiled_cache is not None:
            directory = self.compiled_cache / "openvino" / _cache_key(path, self.precision, ov.get_version())
            directory.mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = os.fspath(directory)
        return config

    def _bind(self, compiled: Any, path: Path, ov: Any) -> None:
        inputs = compiled.inputs
        if len(inputs) != 1:
            raise ModelError(f"ONNX model {path} has {len(inputs)} inputs; the harness feeds one")
        names = [next(iter(o.get_names()), "") for o in compiled.outputs]
        if self.output_name and self.output_name not in names:
            raise ModelError(f"ONNX model {path} has no output {self.output_name!r}; outputs: {', '.join(names)}")
        self._output = compiled.outputs[names.index(self.output_name) if self.output_name else 0]
        self.output_name = self.output_name or names[0]
        self.input_name = next(iter(inputs[0].get_names()), self.input_name)
        self.streams = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._compiled = compiled
        self._requests = [compiled.create_infer_request() for _ in range(self.streams)]

    def outputs(self, batch: np.ndarray) -> np.ndarray:
        if self.streams == 1 or len(batch) < 2:
            return self._infer(self._requests[0], batch)
        parts = np.array_split(batch, min(self.streams, len(batch)))
        requests = self._requests[:len(parts)]
        for request, part in zip(requests, parts):
            request.start_async({0: part}, share_inputs=True)
        for request in requests:
            request.wait()
        return np.concatenate([np.array(request.get_tensor(self._output).data) for request in requests])

    def _infer(self, request: Any, batch: np.ndarray) -> np.ndarray:
        request.infer({0: batch}, share_inputs=True)
        return np.array(request.get_tensor(self._output).data)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["streams"] = self.streams
        info["performance_hint"] = "THROUGHPUT" if self.scenario in THROUGHPUT_SCENARIOS else "LATENCY"
        if self._compiled is not None:
            info["execution_precision"] = str(self._compiled.get_property("INFERENCE_PRECISION_HINT"))
        return info


def _cache_key(path: Path, precision: str, version: str) -> str:
    """One compiled-model cache directory per model file content, precision and OpenVINO version."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    safe_version = "".join(c if c.isalnum() or c in ".-" else "_" for c in version)[:40]
    return f"{digest}-{precision}-{safe_version}"
