"""Command line of the harness: parse options, run one LoadGen test, score it, write result.json."""
# Options may also come from ``$EXTRA_OPS`` (shlex-split). They are appended AFTER the command line,
# so for an option given in both places the ``$EXTRA_OPS`` value wins: a program's command line
# holds its defaults and ``--env.EXTRA_OPS="--count 500 --time 60"`` overrides them, as with CK.
from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .errors import HarnessError, InputNotFound, LoadGenError, ModelError, UsageError
from .rules import DEFAULT_RULES, RULES_VERSIONS, check_rules, summary_text
from .settings import SCENARIOS, offline_sample_count

log = logging.getLogger("harness")

DEFAULT_USER_CONF = Path(__file__).resolve().parent.parent / "user.conf"
# The names of preprocess.PROFILES, listed here so that parsing options imports neither OpenCV nor numpy.
PROFILE_NAMES = ("mlperf-resnet50", "mlperf-resnet50-pytorch", "efficientnet-lite")
NO_AUDIT_CONFIG = "no-audit.config"  # a name that never exists: LoadGen then applies no audit settings
COMPLIANCE_TESTS = ("TEST01", "TEST04")
SHORT_RUN_WARMUP_BATCH = 4
# The names of backends.BACKEND_NAMES, for the same reason; each backend's framework and its pip extra.
BACKEND_NAMES = ("onnxruntime", "pytorch", "null", "tensorflow", "tvm", "openvino")
FRAMEWORKS = {"onnxruntime": "onnxruntime", "pytorch": "torch", "tensorflow": "tensorflow", "tvm": "tvm",
              "openvino": "openvino"}
PRECISIONS = ("fp32", "bf16", "int8")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (option names follow the MLPerf reference harness)."""
    p = argparse.ArgumentParser(
        prog="python -m harness",
        description="MLPerf Inference image classification under LoadGen (ResNet50 v1.5 and friends).",
        epilog="Options are also read from $EXTRA_OPS, appended after the command line (its values win).",
    )
    p.add_argument("--scenario", default="SingleStream", choices=SCENARIOS, help="LoadGen scenario")
    p.add_argument("--accuracy", action="store_true", help="accuracy mode: every sample once, then score")
    p.add_argument("--backend", default="onnxruntime", choices=BACKEND_NAMES)
    p.add_argument("--model", help="model file (.onnx for onnxruntime, tvm, openvino; .pth/.pt for pytorch; "
                                   ".pb or a SavedModel directory for tensorflow)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="compute precision: bf16 (pytorch autocast, openvino hint) needs AMX or AVX-512 bf16; "
                        "int8 runs a quantized model (default: int8 for an int8 --model-precision, else fp32)")
    p.add_argument("--model-precision", default="fp32", help="the precision the model file is stored in")
    p.add_argument("--model-report", help="the model package's quantization report (its accuracy gate "
                                          "goes into result.json)")
    p.add_argument("--compiled-cache", help="where tvm and openvino keep compiled models "
                                            "(default: CACHE_DIR/../compiled)")
    p.add_argument("--tune-trials", type=int, default=0, help="tvm: MetaSchedule trials per batch size (0: untuned)")
    p.add_argument("--model-name", default="resnet50", help="model name for mlperf.conf/user.conf lookup")
    p.add_argument("--profile", default="mlperf-resnet50", choices=PROFILE_NAMES,
                   help="preprocessing: crop pipeline and input normalisation")
    p.add_argument("--dataset-path", required=True, help="directory holding the images")
    p.add_argument("--dataset-list", help="val_map (default: DATASET_PATH/val_map.txt)")
    p.add_argument("--cache-dir", help="preprocessed crop cache (default: OUTPUT/preprocessed)")
    p.add_argument("--label-offset", type=int, default=0, help="added to predicted ids (-1 for 1001-class models)")
    p.add_argument("--input-name", help="model input name (default: the first)")
    p.add_argument("--output-name", help="model output name (default: the first)")
    p.add_argument("--data-layout", default="NCHW", choices=("NCHW", "NHWC"))
    p.add_argument("--threads", type=int, help="intra-op threads (default: the available cores)")
    p.add_argument("--max-batchsize", type=int, default=32, help="largest batch for Offline/Server/MultiStream")
    p.add_argument("--count", type=int, help="use the first N images; also sets min and max query count")
    p.add_argument("--time", type=float, help="min and max duration, seconds")
    p.add_argument("--qps", type=float, help="Server target QPS and Offline expected QPS")
    p.add_argument("--max-latency", type=float, help="Server target latency, seconds")
    p.add_argument("--samples-per-query", type=int, help="MultiStream samples per query")
    p.add_argument("--user-conf", default=None,
                   help=f"LoadGen user.conf (default: {DEFAULT_USER_CONF.name} of the program; '' for none)")
    p.add_argument("--output", default=None, help="directory for LoadGen logs and result.json (default: cwd)")
    p.add_argument("--debug", action="store_true", help="verbose logging and the LoadGen trace")
    p.add_argument("--provider", help="onnxruntime execution provider (cpu, cuda, or a full name)")
    p.add_argument("--torch-compile", action="store_true", help="pytorch: torch.compile with freezing")
    p.add_argument("--accuracy-meaningless", action="store_true",
                   help="the model has random weights: warn loudly in accuracy mode and record it")
    p.add_argument("--rules", default=DEFAULT_RULES, choices=RULES_VERSIONS,
                   help="MLPerf rules to follow and judge by (v6.1: LoadGen's built-in mlperf.conf)")
    p.add_argument("--official-val-map",
                   help="single-label val map in the same order, as the official accuracy script reads it")
    p.add_argument("--compliance", choices=COMPLIANCE_TESTS,
                   help="run this compliance test with its official audit.config, then its run_verification.py")
    p.add_argument("--compliance-results",
                   help="results directory to verify against (performance/run_1, accuracy); default: run them first")
    p.add_argument("--inference-src", help="MLPerf inference source tree (compliance/, tools/)")
    p.add_argument("--find-performance", action="store_true",
                   help="measure the QPS and latency to aim at and write them to a user.conf the next runs use")
    p.add_argument("--found-conf-dir",
                   help="where --find-performance keeps its user.conf; later runs read it after --user-conf")
    return p


def parse_args(argv: Sequence[str] | None, environ: dict[str, str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` followed by the shlex-split ``$EXTRA_OPS``."""
    env = os.environ if environ is None else environ
    args = list(sys.argv[1:] if argv is None else argv)
    extra = env.get("EXTRA_OPS", "").strip()
    if extra:
        try:
            args += shlex.split(extra)
        except ValueError as exc:
            raise UsageError(f"cannot split $EXTRA_OPS ({exc}): {extra!r}") from None
    return build_parser().parse_args(args)


def _versions(backend_name: str) -> dict[str, str]:
    import cv2
    import numpy

    versions = {"python": platform.python_version(), "numpy": numpy.__version__, "cv2": cv2.__version__}
    try:
        versions["loadgen"] = importlib.metadata.version("mlcommons-loadgen")
    except importlib.metadata.PackageNotFoundError:
        versions["loadgen"] = "unknown"
    framework = FRAMEWORKS.get(backend_name)
    if framework:
        distribution = {"tvm": "apache-tvm", "tensorflow": "tensorflow-cpu"}.get(framework, framework)
        try:
            versions[framework] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[framework] = "unknown"
    return versions


def _check_args(args: argparse.Namespace) -> None:
    if args.max_batchsize <= 0:
        raise UsageError(f"--max-batchsize must be positive, got {args.max_batchsize}")
    if args.tune_trials < 0:
        raise UsageError(f"--tune-trials must be 0 or more, got {args.tune_trials}")
    if args.threads is not None and args.threads <= 0:
        raise UsageError(f"--threads must be positive, got {args.threads}")
    if args.backend != "null" and not args.model:
        raise UsageError(f"the {args.backend} backend needs --model")
    if args.model and args.backend != "null" and not Path(args.model).exists():
        raise InputNotFound(f"model file not found: {args.model}")  # before minutes of preprocessing


def _compiled_cache(args: argparse.Namespace, output: Path) -> Path:
    """``--compiled-cache``, else ``compiled`` beside the crop cache (or in the output directory)."""
    if args.compiled_cache:
        return Path(args.compiled_cache)
    return Path(args.cache_dir).parent / "compiled" if args.cache_dir else output / "compiled"


def _user_confs(args: argparse.Namespace) -> list[Path]:
    """``--user-conf`` if given ('' for none), else the program's user.conf next to this package;
    then the conf that a find-performance run wrote for this set-up, if there is one."""
    from .findperf import found_conf_path

    if args.user_conf is None:
        confs = [DEFAULT_USER_CONF] if DEFAULT_USER_CONF.is_file() else []
    else:
        confs = [Path(args.user_conf)] if args.user_conf else []
    found = found_conf_path(args)
    if found is not None and found.is_file() and not args.find_performance:
        confs.append(found)
    return confs


@dataclass
class Prepared:
    """What every LoadGen test of one harness process shares: dataset, crop cache, loaded backend."""

    args: argparse.Namespace
    dataset: Any
    cache: Any
    backend: Any
    user_confs: list[Path]
    threads: int
    max_batch: int
    preprocessed_now: int
    started: float


def prepare(args: argparse.Namespace) -> Prepared:
    """Check the options, load the dataset, fill the crop cache and load the model."""
    from .backends import create_backend
    from .dataset import load_dataset
    from .preprocess import CropCache, available_cores, crop_params_for

    _check_args(args)
    check_rules(args.rules)
    args.precision = args.precision or ("int8" if args.model_precision == "int8" else "fp32")
    started = time.time()
    output = Path(args.output) if args.output else Path.cwd()
    output.mkdir(parents=True, exist_ok=True)
    threads = args.threads or available_cores()
    if args.accuracy and args.accuracy_meaningless:
        log.warning("!" * 72)
        log.warning("ACCURACY IS MEANINGLESS: this model has random weights; the figure below is noise")
        log.warning("!" * 72)
    dataset = load_dataset(args.dataset_path, args.dataset_list, count=args.count)
    cache = CropCache(args.cache_dir or output / "preprocessed", crop_params_for(args.profile))
    report = cache.ensure(dataset.samples)
    log.info("dataset: %d images (%d preprocessed now, %d from cache)", len(dataset), report.computed, report.reused)
    backend = create_backend(
        args.backend, threads=threads, label_offset=args.label_offset, layout=args.data_layout,
        input_name=args.input_name, output_name=args.output_name, provider=args.provider,
        torch_compile=args.torch_compile, precision=args.precision, scenario=args.scenario,
        compiled_cache=_compiled_cache(args, output), tune_trials=args.tune_trials,
    )
    backend.load(args.model)
    max_batch = min(args.max_batchsize, backend.max_batch or args.max_batchsize)
    return Prepared(args, dataset, cache, backend, _user_confs(args), threads, max_batch, report.computed, started)


def run_test(prep: Prepared, output: Path, *, accuracy: bool, audit_config: Path | None = None) -> dict[str, Any]:
    """One LoadGen test into ``output`` (created); returns its result.json content (also written there)."""
    from .fileio import write_json_atomic
    from .result import build_result
    from .settings import Overrides, build_test_settings, expected_duration_s

    args = prep.args
    output.mkdir(parents=True, exist_ok=True)
    overrides = Overrides(count=args.count, time_s=args.time, qps=args.qps, max_latency_s=args.max_latency,
                          samples_per_query=args.samples_per_query)
    settings, rules, applied = build_test_settings(args.model_name, args.scenario, accuracy=accuracy,
                                                   user_conf=prep.user_confs, overrides=overrides,
                                                   total_samples=len(prep.dataset), rules_version=args.rules)
    expected = expected_duration_s(settings, args.scenario, accuracy=accuracy, total_samples=len(prep.dataset))
    print(f"expected duration: about {expected:.0f} s ({args.scenario} {'accuracy' if accuracy else 'performance'}"
          f"{', with audit.config' if audit_config else ''})", flush=True)
    started = time.time()
    stats = _run_loadgen(args, prep.dataset, prep.cache, prep.backend, settings, output, prep.max_batch,
                         accuracy=accuracy, audit_config=audit_config)
    scored = _score(args, prep.dataset, output) if accuracy else None
    stats["total_seconds"] = round(time.time() - started, 3)
    stats["expected_seconds"] = round(expected, 3)
    extra = _description(args, prep, settings)
    extra["dataset"]["preprocessed_now"] = prep.preprocessed_now
    extra["harness"] = stats
    result = build_result(scenario=args.scenario, accuracy_mode=accuracy, log_dir=output, rules=rules,
                          accuracy=scored, accuracy_meaningless=args.accuracy_meaningless, extra=extra,
                          rules_version=args.rules, rules_applied=applied, audit=audit_config is not None)
    write_json_atomic(output / "result.json", result)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run one test as ``args`` say (a compliance test runs its references first); returns result.json."""
    from .fileio import write_json_atomic

    prep = prepare(args)
    output = Path(args.output) if args.output else Path.cwd()
    if args.find_performance:
        from .findperf import find_performance

        result = find_performance(prep, output, run_test)
    elif args.compliance:
        from .compliance import run_compliance

        result = run_compliance(prep, output, run_test)
    else:
        result = run_test(prep, output, accuracy=args.accuracy)
    result.setdefault("harness", {})["process_seconds"] = round(time.time() - prep.started, 3)
    write_json_atomic(output / "result.json", result)
    _print_summary(result)
    return result


def _run_loadgen(args: argparse.Namespace, dataset: Any, cache: Any, backend: Any, settings: Any, output: Path,
                 max_batch: int, *, accuracy: bool, audit_config: Path | None) -> dict[str, Any]:
    """Warm up, run LoadGen with the scenario's SUT, and return the harness's own counters."""
    import mlperf_loadgen as lg

    from .settings import build_log_settings
    from .sut import SampleLibrary, create_sut

    log_settings = build_log_settings(output, trace=args.debug)
    qsl = SampleLibrary(dataset, cache, profile=args.profile, layout=args.data_layout,
                        needs_input=backend.needs_input)
    # warm up the batch sizes the run will use (an accuracy run never batches beyond the dataset). A
    # short run (--time) warms up on a small batch only: a full one would cost as much as a batch of the
    # run itself, and a new batch size costs onnxruntime little; torch.compile needs every size it runs.
    largest = min(max_batch, len(dataset)) if accuracy else max_batch
    sizes = {1}
    if args.time is not None and not args.torch_compile:
        if args.scenario == "Offline" and not accuracy:
            # a short Offline run is a few batches: warm up exactly the sizes its one query splits into,
            # or the first batch's allocations weigh on its score (and TEST01/TEST04 compare scores)
            samples = offline_sample_count(settings)
            largest = min(max_batch, samples)
            if samples % largest:
                sizes.add(samples % largest)
        else:
            largest = min(largest, SHORT_RUN_WARMUP_BATCH)
    sizes.add(largest)
    backend.warmup(qsl.sample_shape, [1] if args.scenario == "SingleStream" else sorted(sizes))
    sut = create_sut(args.scenario, backend, qsl, max_batch=max_batch)
    qsl_handle = qsl.construct(settings.performance_sample_count_override)
    log.info("running %s %s with %s (%d threads, max batch %d)", args.scenario,
             "accuracy" if accuracy else "performance", backend.name, backend.threads, max_batch)
    for stale in ("mlperf_log_detail.txt", "mlperf_log_summary.txt", "mlperf_log_accuracy.json"):
        (output / stale).unlink(missing_ok=True)
    sut.start()
    test_started = time.time()
    try:
        # an explicit audit file name: LoadGen would otherwise pick up any audit.config in the working directory
        audit = os.fspath(audit_config) if audit_config else os.fspath(output / NO_AUDIT_CONFIG)
        lg.StartTestWithLogSettings(sut.handle, qsl_handle, settings, log_settings, audit)
    finally:
        sut.stop()
        sut.close()
        lg.DestroyQSL(qsl_handle)
    if sut.error is not None:
        raise ModelError(f"inference failed during the test: {sut.error}")
    if not (output / "mlperf_log_detail.txt").is_file():
        raise LoadGenError(f"LoadGen wrote no logs into {output}")
    return {"completed_samples": sut.completed, "batches": sut.batches, "qsl_loads": qsl.loads,
            "backend_seconds": round(sut.backend_seconds, 3), "test_seconds": round(time.time() - test_started, 3)}


def _score(args: argparse.Namespace, dataset: Any, output: Path) -> dict[str, Any]:
    """Score the accuracy log in-process; print the line and write accuracy.txt.

    With ``--official-val-map`` (one label per image, the file the official script reads) the log
    is scored against it too: that line is the one a submission's accuracy.txt must equal.
    """
    from .accuracy import compute_accuracy, compute_accuracy_for
    from .fileio import write_text_atomic

    scored = compute_accuracy_for(output / "mlperf_log_accuracy.json", dataset)
    line = scored.line()
    print(line, flush=True)
    write_text_atomic(output / "accuracy.txt", line + "\n")
    if args.accuracy_meaningless:
        log.warning("ACCURACY IS MEANINGLESS (random weights): %s", line)
    record = {"top1": scored.top1, "good": scored.good, "total": scored.total, "expected": len(dataset),
              "empty_responses": scored.empty, "meaningless": bool(args.accuracy_meaningless)}
    official_map = args.official_val_map or None
    if official_map:
        single = compute_accuracy(output / "mlperf_log_accuracy.json", official_map)
        record["single_label"] = {"val_map": os.fspath(Path(official_map).resolve()), "line": single.line(),
                                  "top1": single.top1, "good": single.good, "total": single.total}
        print(f"single-label val map: {single.line()}", flush=True)
    return record


def _description(args: argparse.Namespace, prep: Prepared, settings: Any) -> dict[str, Any]:
    """What ran, for result.json: model, backend, dataset, settings asked for, versions."""
    from .settings import describe_settings

    dataset, cache, backend, confs = prep.dataset, prep.cache, prep.backend, prep.user_confs
    threads, max_batch = prep.threads, prep.max_batch
    backend_info = backend.describe()
    backend_info["max_batchsize"] = max_batch
    model = {"path": os.fspath(Path(args.model).resolve()) if args.model else None, "name": args.model_name,
             "profile": args.profile, "label_offset": args.label_offset,
             "accuracy_meaningless": bool(args.accuracy_meaningless), "data_layout": args.data_layout,
             "precision": args.precision}
    if args.model_report:
        model["accuracy_gate"] = _accuracy_gate(Path(args.model_report))
    return {
        "model": model,
        "backend": backend_info,
        "dataset": {"path": os.fspath(dataset.root.resolve()), "list": os.fspath(dataset.list_path.resolve()),
                    "count": len(dataset), "cache_dir": os.fspath(cache.directory.resolve()),
                    "single_label_list": (os.fspath(Path(args.official_val_map).resolve())
                                          if args.official_val_map else None)},
        "threads": threads,
        "max_batchsize": max_batch,
        "requested_settings": describe_settings(settings),
        "user_conf": os.fspath(confs[0]) if confs else None,
        "user_confs": [os.fspath(conf) for conf in confs],
        "versions": _versions(args.backend),
    }


def _accuracy_gate(path: Path) -> dict[str, Any]:
    """The accuracy gate a quantized model package recorded (agreement with its fp32 parent)."""
    import json

    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        return dict(report["gate"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputNotFound(f"model report {path} is missing or has no 'gate': {exc}") from None


def _print_summary(result: dict[str, Any]) -> None:
    metric = result.get("metric") or {}
    value = metric.get("value")
    shown = f"{value:.3f}" if isinstance(value, float) else str(value)
    verdict = "VALID" if result["valid"] else "INVALID"
    rules = summary_text(result["mlperf_rules"]) if result.get("mlperf_rules") else "rules unknown"
    audit = f", audit {result['audit']['test']}" if result.get("audit") else ""
    print(f"{result['scenario']} {result['mode']}{audit}: {metric.get('name')}={shown} {metric.get('unit', '')} "
          f"(LoadGen: {verdict}; valid for submission: {'yes' if result['valid_for_submission'] else 'no'}; "
          f"{rules})", flush=True)
    compliance = result.get("compliance")
    if compliance:
        print(f"{compliance['test']} verification: {'PASS' if compliance['passed'] else 'FAIL'}", flush=True)
    gate = (result.get("model") or {}).get("accuracy_gate")
    if gate:
        print(f"accuracy gate ({gate.get('parent_precision', 'fp32')} parent): "
              f"{'passed' if gate.get('passed') else 'FAILED'}: {gate.get('statement', '')}", flush=True)
    for reason in result["invalid_reasons"]:
        print(f"  - {reason}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: the single place that prints errors and picks the exit status."""
    try:
        args = parse_args(argv)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s: %(message)s")
    try:
        run(args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0
