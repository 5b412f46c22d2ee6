"""Detection speed: cold `ckx detect` of Python and of onnxruntime, and resolving an env already recorded.

"Cold" means a fresh CKX_HOME each time (no index, no env, no cached interpreter probe), run through
the real command line in a subprocess, so the figures include ckx's own start-up. Resolving a
recorded env is timed in process with a fresh Context each time (the index is opened and queried).
Prints a Markdown table and writes it to benchmarks/out/detect.md.

    python benchmarks/detect.py [--repeat=5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "out" / "detect.md"
PYTHON_TARGET_S = 0.5
ONNXRUNTIME_TARGET_S = 0.5
RESOLVE_TARGET_S = 0.1


# Bytecode goes to a temporary cache (never into the checkout), warmed before timing: an installed ckx
# has its .pyc files, and a run that compiles every module from source measures the compiler instead.
_PYCACHE = tempfile.mkdtemp(prefix="ckx-bench-pycache-")


def _environ(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = _PYCACHE
    env["CKX_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _ckx(home: Path, *args: str) -> tuple[float, dict]:
    """Run ``python -m ckx ARGS --json``; (wall seconds, parsed result)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ckx", *args, "--json"], capture_output=True, text=True,
                          env=_environ(home), timeout=120, check=False)
    elapsed = time.perf_counter() - start
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        data = {"return": proc.returncode, "error": proc.stderr.strip()}
    return elapsed, data


def _cold(args: list[str], repeat: int) -> tuple[list[float], list[int], str | None]:
    times, subprocesses, error = [], [], None
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="ckx-bench-") as tmp:
            elapsed, data = _ckx(Path(tmp), *args)
        if data.get("return"):
            error = data.get("error") or f"exit {data.get('return')}"
            break
        times.append(elapsed)
        subprocesses.append(int(data.get("subprocesses", 0)))
    return times, subprocesses, error


def _warm(args: list[str], repeat: int) -> tuple[list[float], list[int], str | None]:
    with tempfile.TemporaryDirectory(prefix="ckx-bench-") as tmp:
        home = Path(tmp)
        _, data = _ckx(home, *args)
        if data.get("return"):
            return [], [], data.get("error")
        times, subprocesses = [], []
        for _ in range(repeat):
            elapsed, data = _ckx(home, *args)
            times.append(elapsed)
            subprocesses.append(int(data.get("subprocesses", 0)))
    return times, subprocesses, None


def _startup(repeat: int) -> list[float]:
    times = []
    with tempfile.TemporaryDirectory(prefix="ckx-bench-") as tmp:
        for _ in range(repeat):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ckx", "version"], capture_output=True, env=_environ(Path(tmp)),
                           timeout=60, check=True)
            times.append(time.perf_counter() - start)
    return times


def _resolve_recorded(repeat: int) -> tuple[list[float], str | None]:
    """resolve_deps of python + onnxruntime (+ numpy) once both are recorded, each time with a fresh Context."""
    from ckx.store.context import Context
    from ckx.core.errors import CkxError
    from ckx.core.home import Home
    from ckx.software.resolve import resolve_deps

    deps = {"python": {"tags": "compiler,python", "sort": 0},
            "numpy": {"tags": "lib,python-package,numpy", "sort": 10},
            "onnxruntime": {"tags": "lib,python-package,onnxruntime", "sort": 20}}
    with tempfile.TemporaryDirectory(prefix="ckx-bench-") as tmp:
        home = Home(Path(tmp))
        ctx = Context(home, quiet=True, interactive=False)
        try:
            resolve_deps(ctx, deps, installed_only=True)
        except CkxError as exc:
            return [], str(exc)
        finally:
            ctx.close()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            ctx = Context(home, quiet=True, interactive=False)
            resolved = resolve_deps(ctx, deps, installed_only=True)
            ctx.close()
            times.append(time.perf_counter() - start)
            assert all(d.origin == "env" for d in resolved), [d.origin for d in resolved]
    return times, None


def _row(label: str, times: list[float], subprocesses: list[int] | None, target: float | None, ck: str,
         error: str | None) -> str:
    if error or not times:
        return f"| {label} | - | - | - | {f'<= {target:g} s' if target else '-'} | {ck} | not measured: {error} |"
    median = statistics.median(times)
    verdict = "" if target is None else ("met" if median <= target else "MISSED")
    procs = "-" if subprocesses is None else str(max(subprocesses))
    return (f"| {label} | {median:.3f} | {min(times):.3f} | {procs} | "
            f"{f'<= {target:g} s' if target else '-'} | {ck} | {verdict} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (median reported)")
    args = parser.parse_args(argv)
    repeat = max(1, args.repeat)
    _warm(["detect", "soft", "--tags=lib,python-package,onnxruntime"], 1)  # fills the bytecode cache

    python_cold = _cold(["detect", "soft:compiler.python"], repeat)
    ort_cold = _cold(["detect", "soft", "--tags=lib,python-package,onnxruntime"], repeat)
    python_warm = _warm(["detect", "soft:compiler.python"], repeat)
    resolve_times, resolve_error = _resolve_recorded(repeat * 4)
    startup = _startup(repeat)

    lines = [
        "# Detection speed",
        "",
        (f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()}, "
         f"{os.cpu_count()} logical CPUs; median and best of {repeat} runs (resolution: {repeat * 4})."),
        "Cold: a fresh CKX_HOME per run (no index, envs or cached probes), through the command line,",
        "with Python bytecode already compiled (as in an installed ckx).",
        "",
        "| measurement | median s | best s | subprocesses | target | CK 2.6.4 | |",
        "|---|---|---|---|---|---|---|",
        _row("cold `ckx detect soft:compiler.python`", python_cold[0], python_cold[1], PYTHON_TARGET_S,
             "4.8 s, 53 subprocesses", python_cold[2]),
        _row("cold `ckx detect soft --tags=lib,python-package,onnxruntime`", ort_cold[0], ort_cold[1],
             ONNXRUNTIME_TARGET_S, "-", ort_cold[2]),
        _row("`ckx detect soft:compiler.python` again (env already recorded)", python_warm[0], python_warm[1], None, "-",
             python_warm[2]),
        _row("resolve python+numpy+onnxruntime, all recorded (in process, fresh Context)", resolve_times, [0],
             RESOLVE_TARGET_S, "-", resolve_error),
        _row("`ckx version` (start-up alone, for reference)", startup, None, None, "-", None),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    import shutil

    shutil.rmtree(_PYCACHE, ignore_errors=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
