"""Inference backends: a small base class; onnxruntime, pytorch and null here, tensorflow, tvm and openvino beside."""
# Each backend imports its framework lazily in ``load``, so the null backend runs with numpy alone.
# Contract: ``load(model_path)`` once, then ``predict(batch)`` from one thread at a time, returning an
# int64 array of class ids with the label offset already applied. ``needs_input`` False means the
# SUT passes the sample indices (int64) instead of tensors: the null backend measures the harness and
# LoadGen without the memory traffic of gathering 602 KB per sample.
from __future__ import annotations

import logging
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputNotFound, ModelError, PrecisionUnsupported, RuntimeMissing, UsageError

log = logging.getLogger(__name__)

NULL_RAW_CLASS = 1


class Backend:
    """Base of the backends: holds the options every backend shares and applies the label offset."""

    name = "base"
    needs_input = True

    def __init__(
        self,
        *,
        threads: int,
        label_offset: int = 0,
        layout: str = "NCHW",
        input_name: str | None = None,
        output_name: str | None = None,
        provider: str | None = None,
        torch_compile: bool = False,
        precision: str = "fp32",
        scenario: str = "SingleStream",
        compiled_cache: str | os.PathLike | None = None,
        tune_trials: int = 0,
    ) -> None:
        self.threads = threads
        self.precision = precision
        self.scenario = scenario
        self.compiled_cache = Path(compiled_cache) if compiled_cache else None
        self.tune_trials = tune_trials
        self.label_offset = label_offset
        self.layout = layout
        self.input_name = input_name
        self.output_name = output_name
        self.provider = provider
        self.torch_compile = torch_compile
        self.model_path: Path | None = None
        self.max_batch: int | None = None  # a fixed batch dimension of the model, when it has one

    @property
    def version(self) -> str:
        """Version of the framework behind the backend."""
        raise NotImplementedError

    def load(self, model_path: str | os.PathLike | None) -> None:
        """Load the model; raises InputNotFound for a missing file and ModelError for a bad one."""
        raise NotImplementedError

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Class ids (int64, label offset applied) for a float32 batch (or indices, see needs_input)."""
        ids = self._classify(batch)
        if self.label_offset:
            ids = ids + self.label_offset
        return ids

    def _classify(self, batch: np.ndarray) -> np.ndarray:
        return _ids_from_output(self.outputs(batch), len(batch), self.output_name)

    def outputs(self, batch: np.ndarray) -> np.ndarray:
        """The model's raw output (scores, or class ids for an ArgMax output) for a float32 batch."""
        raise NotImplementedError

    def warmup(self, sample_shape: tuple[int, ...], batch_sizes: list[int]) -> None:
        """Run the model once per batch size on zeros, so first-call costs stay out of the measurement."""
        if not self.needs_input:
            return
        for n in sorted(set(batch_sizes)):
            self.predict(np.zeros((n, *sample_shape), dtype=np.float32))

    def describe(self) -> dict[str, Any]:
        """The backend part of result.json."""
        return {"name": self.name, "version": self.version, "provider": self.provider, "threads": self.threads,
                "precision": self.precision}


def _ids_from_output(out: np.ndarray, n: int, output_name: str | None) -> np.ndarray:
    """Class ids from a model output: an integer output holds them already, scores are argmaxed."""
    if np.issubdtype(out.dtype, np.integer):
        if out.size != n:
            raise ModelError(f"output {output_name!r} has shape {out.shape} for a batch of {n}")
        return out.reshape(n).astype(np.int64, copy=False)
    return out.reshape(n, -1).argmax(axis=1).astype(np.int64, copy=False)


def require_runtime(module: str, extra: str, backend: str) -> Any:
    """Import ``module`` for ``backend``; RuntimeMissing naming the pip extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeMissing(
            f"the {backend} backend needs the Python package {module!r}, which cannot be imported ({exc})",
            hint=f"install it with: pip install 'ckx[{extra}]' (or use the program entry, which installs it)",
        ) from None


def _require_file(model_path: str | os.PathLike | None, backend: str) -> Path:
    if model_path is None:
        raise UsageError(f"the {backend} backend needs --model")
    path = Path(model_path)
    if not path.is_file():
        raise InputNotFound(f"model file not found: {path}")
    return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


class NullBackend(Backend):
    """No framework: every sample gets the same class, at once. Measures the harness and LoadGen."""

    name = "null"
    needs_input = False

    @property
    def version(self) -> str:
        return "0"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._answers = np.full(64, NULL_RAW_CLASS + self.label_offset, dtype=np.int64)

    def load(self, model_path: str | os.PathLike | None) -> None:
        self.model_path = Path(model_path) if model_path else None

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) > len(self._answers):
            self._answers = np.full(len(batch), NULL_RAW_CLASS + self.label_offset, dtype=np.int64)
        return self._answers[:len(batch)]


ORT_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dnnl": "DnnlExecutionProvider",
}


class OnnxRuntimeBackend(Backend):
    """onnxruntime with all graph optimisations, ``threads`` intra-op threads, one inter-op thread."""

    name = "onnxruntime"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._session: Any = None
        self._output_is_ids = False

    @property
    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def load(self, model_path: str | os.PathLike | None) -> None:
        ort = require_runtime("onnxruntime", "mlperf", self.name)
        if self.precision == "bf16":
            raise PrecisionUnsupported("the onnxruntime backend runs fp32 and int8 (QDQ) models, not bf16",
                                       hint="use the pytorch or openvino backend for bf16")
        path = _require_file(model_path, self.name)
        provider = ORT_PROVIDER_ALIASES.get((self.provider or "cpu").lower(), self.provider or "CPUExecutionProvider")
        available = ort.get_available_providers()
        if provider not in available:
            raise UsageError(f"onnxruntime execution provider {provider!r} is not available; available: "
                             f"{', '.join(available)}")
        self.provider = provider
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(os.fspath(path), options, providers=[provider])
        except Exception as exc:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
            raise ModelError(f"cannot load ONNX model {path}: {_first_line(exc)}") from None
        self._bind(session, path)
        self.model_path = path

    def _bind(self, session: Any, path: Path) -> None:
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name: o for o in session.get_outputs()}
        in_name = self.input_name or next(iter(inputs))
        out_name = self.output_name or next(iter(outputs))
        if in_name not in inputs:
            raise ModelError(f"ONNX model {path} has no input {in_name!r}; inputs: {', '.join(inputs)}")
        if out_name not in outputs:
            raise ModelError(f"ONNX model {path} has no output {out_name!r}; outputs: {', '.join(outputs)}")
        meta = inputs[in_name]
        if meta.type != "tensor(float)":
            raise ModelError(f"ONNX model {path}: input {in_name!r} is {meta.type}, the harness feeds float32")
        shape = list(meta.shape)
        if len(shape) == 4 and all(isinstance(d, int) for d in shape[1:]):
            channels = shape[1] if self.layout == "NCHW" else shape[3]
            if channels != 3:
                other = "NHWC" if self.layout == "NCHW" else "NCHW"
                raise ModelError(f"ONNX model {path}: input {in_name!r} has shape {shape}, not {self.layout}; "
                                 f"try --data-layout {other}")
        if shape and isinstance(shape[0], int) and shape[0] > 0:
            self.max_batch = shape[0]
        self._output_is_ids = "int" in outputs[out_name].type
        self.input_name, self.output_name = in_name, out_name
        self._session = session

    def outputs(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run([self.output_name], {self.input_name: batch})[0]


class PyTorchBackend(Backend):
    """PyTorch on CPU: a state_dict for our ResNet50, a TorchScript archive or a whole pickled module.

    Every torch call (load, warm-up, inference) runs on one private thread. PyTorch's OpenMP keeps a
    thread team per calling thread; teams of different callers (main thread, LoadGen's issue thread,
    a worker) spin against each other on a small machine: measured 64 ms per image from one thread,
    110-400 ms, and up to 1.5 s under LoadGen, once two threads had called. The hop costs ~50 us.
    """

    name = "pytorch"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._model: Any = None
        self._compiled_sizes: set[int] = set()
        self._executor: Any = None

    def _on_torch_thread(self, function: Any, *args: Any) -> Any:
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torch")
        return self._executor.submit(function, *args).result()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self._on_torch_thread(Backend.predict, self, batch)

    @property
    def version(self) -> str:
        import torch

        return torch.__version__

    def load(self, model_path: str | os.PathLike | None) -> None:
        path = _require_file(model_path, self.name)
        self._on_torch_thread(self._load, path)

    def _load(self, path: Path) -> None:
        torch = require_runtime("torch", "torch", self.name)
        _check_torch_precision(self.precision)
        if "x86" in torch.backends.quantized.supported_engines:
            torch.backends.quantized.engine = "x86"  # int8 TorchScript models (fbgemm kernels with x86 tuning)
        torch.set_num_threads(self.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set (or parallel work already ran) in this process
            pass
        model = _load_torch_model(path)
        model.eval()
        model = model.to(memory_format=torch.channels_last)
        if self.torch_compile:
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True
            model = torch.compile(model, dynamic=False)
        self._model = model
        self.model_path = path

    def warmup(self, sample_shape: tuple[int, ...], batch_sizes: list[int]) -> None:
        super().warmup(sample_shape, batch_sizes)
        if self.torch_compile:
            self._compiled_sizes = set(batch_sizes)

    def _classify(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        logits = self._logits(batch)
        return logits[:n].reshape(n, -1).argmax(dim=1).numpy().astype(np.int64, copy=False)

    def outputs(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        return self._on_torch_thread(lambda: self._logits(batch)[:n].float().numpy())

    def _logits(self, batch: np.ndarray) -> Any:
        import torch

        n = len(batch)
        if self._compiled_sizes and n not in self._compiled_sizes:
            # a compiled model recompiles (seconds) for each new batch size: pad to a size it knows
            bigger = [s for s in self._compiled_sizes if s > n]
            if bigger:
                padded = np.zeros((min(bigger), *batch.shape[1:]), dtype=batch.dtype)
                padded[:n] = batch
                batch = padded
        tensor = torch.from_numpy(batch)
        if self.layout == "NHWC":
            tensor = tensor.permute(0, 3, 1, 2)  # NCHW view with channels-last memory: no copy
        else:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self._model(tensor)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        return logits


def _check_torch_precision(precision: str) -> None:
    """PrecisionUnsupported unless ``precision`` runs here: fp32 and int8 anywhere, bf16 with AMX or AVX-512 bf16."""
    from .cpu import has_bf16

    if precision not in ("fp32", "bf16", "int8"):
        raise PrecisionUnsupported(f"the pytorch backend runs fp32, bf16 or int8, not {precision!r}")
    if precision == "bf16" and not has_bf16():
        raise PrecisionUnsupported(
            "bf16 needs a CPU with AMX or AVX-512 bf16 (flags amx_bf16 or avx512_bf16); this CPU has neither, "
            "and emulated bf16 would be slower than fp32",
            hint="run fp32 (drop --precision / MLPERF_PRECISION=bf16), or int8 with --dep_add_tags.model=int8",
        )


def _load_torch_model(path: Path) -> Any:
    """A torch.nn.Module from a TorchScript archive, a state_dict of our ResNet50, or a pickled module."""
    import pickle

    import torch

    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise ModelError(f"cannot read PyTorch model {path}: {_first_line(exc)}") from None
        if any(name.endswith("/constants.pkl") or "/code/" in name for name in names):
            try:
                with warnings.catch_warnings():  # TorchScript is deprecated, yet it is how such files load
                    warnings.simplefilter("ignore", DeprecationWarning)
                    return torch.jit.load(os.fspath(path), map_location="cpu")
            except Exception as exc:  # torch raises RuntimeError and friends
                raise ModelError(f"cannot load TorchScript model {path}: {_first_line(exc)}") from None
    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise ModelError(f"cannot load PyTorch model {path}: {_first_line(exc)}") from None
        log.warning("%s holds a pickled object, not plain weights: loading it runs code from the file", path)
        try:
            obj = torch.load(os.fspath(path), map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ModelError(f"cannot load PyTorch model {path}: {_first_line(exc)}") from None
    except Exception as exc:
        raise ModelError(f"cannot load PyTorch model {path}: {_first_line(exc)}") from None
    if isinstance(obj, torch.nn.Module):
        return obj
    if isinstance(obj, dict):
        return _resnet50_from_state_dict(obj, path)
    raise ModelError(f"PyTorch model {path} holds a {type(obj).__name__}, not a module or a state_dict")


def _resnet50_from_state_dict(obj: dict, path: Path) -> Any:
    import torch

    from .resnet50 import build_resnet50

    state = obj.get("state_dict", obj)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"PyTorch model {path} is a dict but not a state_dict of tensors")
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    fc = state.get("fc.weight")
    if fc is None or fc.ndim != 2:
        raise ModelError(f"state_dict {path} is not a ResNet50 state_dict (no 2-D fc.weight)")
    model = build_resnet50(num_classes=int(fc.shape[0]))
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ModelError(f"state_dict {path} does not fit ResNet50 v1.5: {_first_line(exc)}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(
            f"state_dict {path} does not fit ResNet50 v1.5: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return model


BACKENDS: dict[str, type[Backend]] = {
    "onnxruntime": OnnxRuntimeBackend,
    "pytorch": PyTorchBackend,
    "null": NullBackend,
}


# Backends in modules of their own, imported only when chosen: name -> (module, class).
MORE_BACKENDS: dict[str, tuple[str, str]] = {
    "tensorflow": ("tf_backend", "TensorFlowBackend"),
    "tvm": ("tvm_backend", "TVMBackend"),
    "openvino": ("openvino_backend", "OpenVINOBackend"),
}
BACKEND_NAMES = (*BACKENDS, *MORE_BACKENDS)


def backend_class(name: str) -> type[Backend]:
    """The class of the backend called ``name``; UsageError if there is none."""
    if name in BACKENDS:
        return BACKENDS[name]
    if name not in MORE_BACKENDS:
        raise UsageError(f"unknown backend {name!r}; known: {', '.join(BACKEND_NAMES)}")
    import importlib

    module, cls = MORE_BACKENDS[name]
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)


def create_backend(name: str, **options: Any) -> Backend:
    """Instantiate the backend called ``name`` (see BACKEND_NAMES) with shared options; nothing is loaded yet."""
    return backend_class(name)(**options)
