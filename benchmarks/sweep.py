"""Sweep overhead: the Ray executor against the local one on the same 8-point sweep of the null backend.

The sweep is 2 thread counts x 2 batch sizes x 2 command keys of image-classification-onnx-cpu with
MLPERF_BACKEND=null (a few seconds of work in all), so what differs is the executor's own cost. Each
executor records into a fresh CKX_HOME through the real command line:

- local: the combinations run one after another in the ckx process;
- ray, own instance: ckx starts a local Ray instance, runs each combination as a task, and stops it;
- ray, cluster: a Ray head started beforehand (``ray start --head --block``, as on a real cluster), so
  the figure leaves out the cluster's start-up.

The overhead per point is (executor's wall time - local wall time) / 8. Prints a Markdown table and writes
it to benchmarks/out/sweep.md.

    python benchmarks/sweep.py [--repeat=3] [--no-cluster]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out" / "sweep.md"
POINTS = 8
TARGET_S = 2.0  # the goal: at most this much more per point on Ray than locally
SWEEP = ["benchmark", "program:image-classification-onnx-cpu", "--cmd_key=performance-offline",
         "--env.MLPERF_BACKEND=null", "--offline", "--sweep.env.MLPERF_THREADS=1,2",
         "--sweep.env.MLPERF_MAX_BATCHSIZE=8,32", "--sweep.cmd_key=performance-offline,performance-singlestream",
         "--record", "--record_uoa=overhead", "--skip_print_timers", "--json"]
SHORT = ["--", "--count", "6", "--time", "1"]


def _environ(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CKX_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["RAY_AUTH_MODE"] = "disabled"  # a loopback benchmark cluster: no token to hand around
    return env


def _sweep(home: Path, *extra: str) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ckx", *SWEEP, *extra, *SHORT], capture_output=True, text=True,
                          env=_environ(home), timeout=900, check=False)
    elapsed = time.perf_counter() - start
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        data = {"return": proc.returncode, "error": proc.stderr[-2000:]}
    if data.get("return") != 0 or len(data.get("ran") or []) != POINTS:
        raise SystemExit(f"the sweep failed: {json.dumps(data)[:2000]}")
    return elapsed, data


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """A one-node Ray cluster on this machine (ckx_node offered once), like a head node of a real one."""

    def __init__(self, home: Path) -> None:
        self.port = _free_port()
        temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
        self.temp = temp
        ray = Path(sys.executable).with_name("ray")
        self.proc = subprocess.Popen([str(ray), "start", "--head", "--block", '--resources={"ckx_node": 1}',
                                      f"--port={self.port}", f"--temp-dir={temp}", "--include-dashboard=false",
                                      "--disable-usage-stats"], env=_environ(home), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self.address = f"127.0.0.1:{self.port}"

    def close(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)  # ray start --block stops its processes on Ctrl-C
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        shutil.rmtree(self.temp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds of each executor (default 3)")
    parser.add_argument("--no-cluster", action="store_true", help="leave out the pre-started cluster")
    args = parser.parse_args(argv)
    rows: dict[str, list[tuple[float, float]]] = {"local": [], "ray, own instance": [], "ray, cluster": []}
    with tempfile.TemporaryDirectory(prefix="ckx-bench-sweep-") as tmp:
        root = Path(tmp)
        cluster = None if args.no_cluster else Cluster(root / "cluster-home")
        try:
            for number in range(args.repeat):
                wall, data = _sweep(root / f"local-{number}")
                rows["local"].append((wall, data["elapsed_s"]))
                wall, data = _sweep(root / f"ray-{number}", "--executor=ray")
                rows["ray, own instance"].append((wall, data["elapsed_s"]))
                if cluster is not None:
                    # the workers use the cluster's environment: the home it was started with
                    wall, data = _sweep(root / "cluster-home", "--executor=ray", f"--ray_address={cluster.address}",
                                        *(["--force"] if number else []))
                    rows["ray, cluster"].append((wall, data["elapsed_s"]))
                print(f"round {number + 1}/{args.repeat} done", file=sys.stderr)
        finally:
            if cluster is not None:
                cluster.close()
    local_wall = statistics.median(w for w, _ in rows["local"])
    lines = [f"# Sweep overhead ({POINTS}-point null-backend sweep, median of {args.repeat})", "",
             f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPU(s)", "",
             "| executor | wall s | in-sweep s | per point s | overhead per point vs local s |",
             "|---|---:|---:|---:|---:|"]
    for name, values in rows.items():
        if not values:
            continue
        wall = statistics.median(w for w, _ in values)
        inside = statistics.median(e for _, e in values)
        overhead = (wall - local_wall) / POINTS
        lines.append(f"| {name} | {wall:.2f} | {inside:.2f} | {wall / POINTS:.2f} | "
                     f"{'-' if name == 'local' else f'{overhead:+.2f}'} |")
    lines.append("")
    for name, values in rows.items():
        if name == "local" or not values:
            continue
        overhead = (statistics.median(w for w, _ in values) - local_wall) / POINTS
        lines.append(f"- {name}: {overhead:+.2f} s per point: the goal of at most {TARGET_S:g} s is "
                     f"{'met' if overhead <= TARGET_S else 'NOT met'}")
    text = "\n".join(lines) + "\n"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
