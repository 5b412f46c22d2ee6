"""TVM backend: compiles an ONNX model for this CPU per batch size, caches the libraries, optionally tunes."""
# The compiled library of one batch size is cached under COMPILED_CACHE/tvm/ keyed by the model file's
# digest, the target (LLVM's name for this CPU, thread count), the TVM version, the batch size and the
# tuning trial count; a smaller batch is padded to the nearest compiled size. Tuning (MetaSchedule, a
# bounded number of trials) keeps its database under COMPILED_CACHE/tvm/tuning/: a later compile for the
# same model, target, version and batch size applies it without tuning again.
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .backends import Backend, _first_line, _require_file, require_runtime
from .cpu import llvm_target
from .errors import ModelError, PrecisionUnsupported

log = logging.getLogger(__name__)

DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")
TUNE_TIMEOUT_S = 6 * 3600


class TVMBackend(Backend):
    """Relax VM on the CPU; one compiled library per batch size the run uses."""

    name = "tvm"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._tvm: Any = None
        self._digest = ""
        self._sample_shape: tuple[int, ...] = ()
        self._machines: dict[int, Any] = {}
        self.target: dict[str, object] = {}
        self.compiled_now: list[int] = []
        self.database_reused = False

    @property
    def version(self) -> str:
        return str(require_runtime("tvm", "tvm", self.name).__version__)

    def load(self, model_path: str | os.PathLike | None) -> None:
        path = _require_file(model_path, self.name)
        if self.precision != "fp32":
            raise PrecisionUnsupported(f"the tvm backend compiles fp32 ONNX models, not {self.precision}",
                                       hint="use onnxruntime or openvino for int8, pytorch or openvino for bf16")
        self._tvm = require_runtime("tvm", "tvm", self.name)
        require_runtime("onnx", "tvm", self.name)
        self._digest = hashlib.sha256(path.read_bytes()).hexdigest()
        self.target = llvm_target(self.threads)
        self.model_path = path
        self._input = self._input_meta(path)

    def _input_meta(self, path: Path) -> tuple[str, tuple[int, ...]]:
        import onnx

        try:
            model = onnx.load(os.fspath(path), load_external_data=False)
        except Exception as exc:  # onnx's DecodeError and friends
            raise ModelError(f"cannot read ONNX model {path}: {_first_line(exc)}") from None
        initialisers = {init.name for init in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in initialisers]
        if len(inputs) != 1:
            raise ModelError(f"ONNX model {path} has {len(inputs)} inputs; the harness feeds one")
        dims = tuple(d.dim_value for d in inputs[0].type.tensor_type.shape.dim)[1:]
        if len(dims) != 3 or not all(dims):
            raise ModelError(f"ONNX model {path}: input {inputs[0].name!r} needs a fixed sample shape, has {dims}")
        return inputs[0].name, dims

    def warmup(self, sample_shape: tuple[int, ...], batch_sizes: list[int]) -> None:
        for n in sorted(set(batch_sizes)):
            self._machine(n)
        super().warmup(sample_shape, batch_sizes)

    def outputs(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        size = min((s for s in self._machines if s >= n), default=n)
        if size != n:
            padded = np.zeros((size, *batch.shape[1:]), dtype=batch.dtype)
            padded[:n] = batch
            batch = padded
        out = self._machine(size)["main"](self._tvm.runtime.tensor(np.ascontiguousarray(batch)))
        if isinstance(out, (tuple, list)) or not hasattr(out, "numpy"):
            out = out[0]
        return out.numpy()[:n]

    def _machine(self, batch: int) -> Any:
        if batch not in self._machines:
            library = self._library(batch)
            module = self._tvm.runtime.load_module(os.fspath(library))
            self._machines[batch] = self._tvm.relax.VirtualMachine(module, self._tvm.cpu())
        return self._machines[batch]

    def _key(self, batch: int) -> str:
        target = json.dumps(self.target, sort_keys=True)
        text = f"{self._digest}|{target}|{self.version}|{batch}|{self.tune_trials}"
        return f"{self._digest[:16]}-b{batch}-t{self.tune_trials}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"

    def _cache_root(self) -> Path:
        root = self.compiled_cache or Path(tempfile.gettempdir()) / "harness-compiled"
        return root / "tvm"

    def _library(self, batch: int) -> Path:
        library = self._cache_root() / f"{self._key(batch)}.so"
        if library.is_file():
            return library
        library.parent.mkdir(parents=True, exist_ok=True)
        executable = self._compile(batch)
        partial = library.with_name(f".{library.name}.{os.getpid()}.tmp.so")
        executable.export_library(os.fspath(partial))
        os.replace(partial, library)
        self.compiled_now.append(batch)
        return library

    def _compile(self, batch: int) -> Any:
        tvm = self._tvm
        from tvm import relax
        from tvm.relax.frontend.onnx import from_onnx

        name, shape = self._input
        try:
            mod = from_onnx(_folded_onnx(self.model_path), shape_dict={name: [batch, *shape]},
                            keep_params_in_input=False)
        except Exception as exc:  # the importer raises ValueError / TVMError for unsupported operators
            raise ModelError(f"TVM cannot import {self.model_path}: {_first_line(exc)}") from None
        target = tvm.target.Target(self.target)
        if self.tune_trials > 0:
            mod = self._tuned(mod, target, batch)
        log.info("tvm: compiling %s for batch %d, target %s", self.model_path.name, batch, self.target["mcpu"])
        return tvm.compile(mod, target=target)

    def _tuned(self, mod: Any, target: Any, batch: int) -> Any:
        from tvm import relax

        work_dir = self._cache_root() / "tuning" / self._key(batch)
        reuse = _has_database(work_dir)
        self.database_reused = self.database_reused or reuse
        if not reuse:
            self._tune_in_child(batch, work_dir)
        log.info("tvm: applying the tuning database for batch %d (%s)", batch, work_dir)
        pipeline = relax.pipeline.static_shape_tuning_pipeline(total_trials=0, target=target,
                                                               work_dir=os.fspath(work_dir))
        return pipeline(mod)

    def _tune_in_child(self, batch: int, work_dir: Path) -> None:
        """Tune in a child process: a crash of the tuner becomes a ModelError, not the end of the run."""
        import subprocess
        import sys

        log.info("tvm: tuning %d trials for batch %d (%s)", self.tune_trials, batch, work_dir)
        argv = [sys.executable, "-m", f"{__package__}.tvm_backend", "--onnx", os.fspath(self.model_path),
                "--batch", str(batch), "--target", json.dumps(self.target), "--trials", str(self.tune_trials),
                "--work-dir", os.fspath(work_dir)]
        base = os.fspath(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [base, os.environ.get("PYTHONPATH")]))}
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=TUNE_TIMEOUT_S, env=env, check=False)
        except subprocess.TimeoutExpired:
            raise ModelError(f"TVM tuning ({self.tune_trials} trials) did not finish within {TUNE_TIMEOUT_S} s") from None
        if done.returncode != 0 or not _has_database(work_dir):
            how = (f"crashed (signal {-done.returncode})" if done.returncode < 0 else
                   f"failed (exit {done.returncode}): " + (done.stderr.strip().splitlines() or ["no output"])[-1][:300])
            raise ModelError(f"TVM tuning of {self.model_path.name} {how} in TVM {self.version}",
                             hint="run untuned: leave MLPERF_TVM_TUNE_TRIALS empty")

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update({"target": self.target, "tune_trials": self.tune_trials, "compiled_now": self.compiled_now,
                     "tuning_database_reused": self.database_reused,
                     "cache": os.fspath(self._cache_root())})
        return info


def _folded_onnx(path: Path) -> Any:
    """The ONNX model with constants folded by onnxruntime's basic (ONNX-standard) optimisations.

    Exporters leave shape arithmetic (Shape, Gather, Concat feeding Pad) that TVM's importer rejects as
    dynamic; folded, the same model imports. Without onnxruntime, the model as it is.
    """
    import onnx

    try:
        import onnxruntime as ort
    except ImportError:
        return onnx.load(os.fspath(path))
    with tempfile.TemporaryDirectory(prefix="tvm-fold-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = os.fspath(Path(tmp) / "folded.onnx")
        options.log_severity_level = 3
        try:
            ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own error types
            raise ModelError(f"cannot read ONNX model {path}: {_first_line(exc)}") from None
        return onnx.load(options.optimized_model_filepath)


def _has_database(work_dir: Path) -> bool:
    return all((work_dir / f).is_file() and (work_dir / f).stat().st_size > 0 for f in DATABASE_FILES)


def tune(onnx_path: Path, batch: int, target: dict[str, object], trials: int, work_dir: Path) -> None:
    """MetaSchedule tuning of the model at ``batch``: writes the database into ``work_dir``."""
    import onnx  # noqa: F401  (the importer needs it)
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    model = _folded_onnx(onnx_path)
    initialisers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initialisers]
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim][1:]
    mod = from_onnx(model, shape_dict={inputs[0].name: [batch, *dims]}, keep_params_in_input=False)
    pipeline = relax.pipeline.static_shape_tuning_pipeline(
        total_trials=trials, target=tvm.target.Target(target), work_dir=os.fspath(work_dir),
        max_trials_per_task=max(1, min(trials, 64)))
    pipeline(mod)


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.tvm_backend --onnx M --batch N --target JSON --trials T --work-dir D``: tune."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.tvm_backend", description=main.__doc__)
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--target", required=True, help="the TVM target as JSON")
    parser.add_argument("--trials", type=int, required=True)
    parser.add_argument("--work-dir", required=True)
    args = parser.parse_args(argv)
    tune(Path(args.onnx), args.batch, json.loads(args.target), args.trials, Path(args.work_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
