"""MLPerf compliance tests: the official audit.config in the run directory, the test, run_verification.py."""
# Layout of a compliance run directory (OUTPUT):
#   audit.config                 copied from <inference src>/compliance/TESTnn[/<model>]/audit.config
#   mlperf_log_*.txt, result.json the audit run itself (LoadGen applied audit.config)
#   reference/performance/run_1  the performance run it is verified against (unless --compliance-results)
#   reference/accuracy           TEST01 only: the accuracy run its sampled responses must equal
#   verification/TESTnn/         what run_verification.py writes (verify_*.txt and copies of the logs)
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from .errors import InputNotFound, UsageError

VERIFY_TIMEOUT_S = 900
SOURCE_ENV = "MLPERF_INFERENCE_SOURCE"
CHECK_LINE = re.compile(r"^(Accuracy|Performance) check pass: (True|False)\s*$", re.MULTILINE)
SRC_HINT = ("install the official tools with 'ckx install package --tags=mlperf,inference,src' "
            "(--local_path=DIR for a copy on disk), or pass --inference-src DIR")


def inference_source(explicit: str | None) -> Path:
    """The MLPerf inference source tree (``--inference-src`` or ``$MLPERF_INFERENCE_SOURCE``)."""
    value = explicit or os.environ.get(SOURCE_ENV, "")
    if not value:
        raise UsageError("a compliance test needs the MLPerf inference source tree", hint=SRC_HINT)
    src = Path(value)
    if not (src / "compliance").is_dir():
        raise InputNotFound(f"no compliance/ directory in the MLPerf inference source {src}", hint=SRC_HINT)
    return src


def audit_config_for(src: Path, test: str, model: str) -> Path:
    """The test's official audit.config: the model's own one if the test has it, else the test's."""
    base = src / "compliance" / test
    for candidate in (base / model / "audit.config", base / "audit.config"):
        if candidate.is_file():
            return candidate
    raise InputNotFound(f"{base} holds no audit.config for {model}")


def _references(prep: Any, directory: Path, test: str, run_test: Callable[..., dict]) -> Path:
    """Run the performance (and for TEST01 the accuracy) run that the audit run is verified against."""
    run_test(prep, directory / "performance" / "run_1", accuracy=False)
    if test == "TEST01":
        run_test(prep, directory / "accuracy", accuracy=True)
    return directory


def _check_results(results: Path, test: str) -> None:
    needed = [results / "performance" / "run_1" / "mlperf_log_detail.txt",
              results / "performance" / "run_1" / "mlperf_log_summary.txt"]
    if test == "TEST01":
        needed.append(results / "accuracy" / "mlperf_log_accuracy.json")
    missing = [os.fspath(p) for p in needed if not p.is_file()]
    if missing:
        raise InputNotFound(f"--compliance-results {results} lacks {', '.join(missing)}")


# The compliance scripts import the detail-log reader as ``log_parser.MLPerfLog``; trees in which the
# submission checker became a package ship that reader as ``submission_checker.parsers.loadgen_parser``
# only, and TEST01's performance check then dies on the import. The alias below makes the old name reach
# the tree's own reader; the verification logic that runs is still entirely the tree's.
_LOG_PARSER_ALIAS = (
    '"""The MLPerf detail-log reader under the name the compliance scripts import."""\n'
    "from submission_checker.parsers.loadgen_parser import LoadgenParser as MLPerfLog  # noqa: F401\n"
)


def _verification_env(src: Path, out: Path) -> dict[str, str]:
    """The environment of run_verification.py: the tree's own tools, and the reader alias where it is missing."""
    env = dict(os.environ)
    tools = src / "tools" / "submission"
    paths = [os.fspath(tools)]
    if not (tools / "log_parser.py").is_file() and (tools / "submission_checker" / "parsers" / "loadgen_parser.py").is_file():
        alias_dir = out / ".log-parser-alias"
        alias_dir.mkdir(parents=True, exist_ok=True)
        (alias_dir / "log_parser.py").write_text(_LOG_PARSER_ALIAS, encoding="utf-8")
        paths.insert(0, os.fspath(alias_dir))
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def verify(src: Path, test: str, results: Path, compliance_dir: Path, out: Path) -> dict[str, Any]:
    """Run the test's official run_verification.py; returns pass/fail per check and its output.

    The script writes its verify_*.txt into its working directory, so it runs in ``out``.
    """
    script = src / "compliance" / test / "run_verification.py"
    if not script.is_file():
        raise InputNotFound(f"official verification script not found: {script}", hint=SRC_HINT)
    out.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, os.fspath(script), "-r", os.fspath(results.resolve()),
            "-c", os.fspath(compliance_dir.resolve()), "-o", os.fspath(out.resolve())]
    if test == "TEST01":
        argv += ["--dtype", "float32"]
    try:
        proc = subprocess.run(argv, cwd=out, capture_output=True, text=True, timeout=VERIFY_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, env=_verification_env(src, out))
        text, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired:
        text, code = f"run_verification.py did not finish in {VERIFY_TIMEOUT_S} s", -1
    (out / "run_verification.log").write_text(text, encoding="utf-8")
    checks = {name.lower(): flag == "True" for name, flag in CHECK_LINE.findall(text)}
    expected = {"accuracy", "performance"} if test == "TEST01" else {"performance"}
    passed = code == 0 and set(checks) == expected and all(checks.values())
    return {"test": test, "passed": passed, "checks": checks, "returncode": code, "script": os.fspath(script),
            "argv": argv, "output": text, "output_dir": os.fspath(out / test)}


def run_compliance(prep: Any, output: Path, run_test: Callable[..., dict]) -> dict[str, Any]:
    """Reference runs (unless given), the audit run with the official audit.config, then the verification."""
    args = prep.args
    test = args.compliance
    src = inference_source(args.inference_src)
    official = audit_config_for(src, test, args.model_name)
    if args.compliance_results:
        results = Path(args.compliance_results)
        _check_results(results, test)
    else:
        results = _references(prep, output / "reference", test, run_test)
    audit = output / "audit.config"
    shutil.copyfile(official, audit)
    result = run_test(prep, output, accuracy=False, audit_config=audit)
    result["audit"] = {"test": test, "audit_config": os.fspath(official),
                       "sha1": hashlib.sha1(audit.read_bytes()).hexdigest()}
    result["compliance"] = verify(src, test, results, output, output / "verification")
    result["compliance"]["results_dir"] = os.fspath(results.resolve())
    if not result["compliance"]["passed"]:
        result["invalid_reasons"].append(f"{test} verification failed")
    return result
