"""Web API throughput: searches per second of `ckx serve` (token, bounded pool) against a baseline and access().

Generates a CK-format repo with the size and module mix of mlcommons@ck-mlops (1,354 entries),
registers it in a temporary CKX_HOME and starts two servers in subprocesses on loopback:
``ckx serve`` as users run it (a random token read back from $CKX_HOME/serve-token, the bounded
pool of request threads, read deadlines), and a baseline: the same server with the token check
short-circuited and a thread per connection, as `ckx serve` was before either existed. Rounds
alternate between the two, so both see the same machine load; each round sends searches over
keep-alive connections from several threads (median of the rounds, latency p50/p99). The same
searches through in-process access() come last. Prints a Markdown table and writes it to
benchmarks/out/server.md.

    python benchmarks/server.py [--rounds=5] [--requests=400] [--threads=4]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import socketserver
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ckx.core.limits import DEFAULT_LIMITS  # noqa: E402  (importable once ROOT is on the path)

# The module mix of mlcommons@ck-mlops (1,354 entries): the nine big modules, then small ones.
MODULE_MIX: dict[str, int] = {
    "package": 558, "soft": 265, "program": 163, "os": 79, "compiler": 56, "script": 55, "docker": 31,
    "demo": 30, "dataset": 22, "module": 30, "platform.init": 15, "cmdgen": 10, "jnotebook": 10,
    "result": 10, "kernel": 8, "dashboard": 7, "misc": 5,
}
TOTAL_ENTRIES = 1354

# Tag vocabularies that look like CK's: a kind prefix, a topic, variants.
_KIND_TAGS = {
    "package": [["lib", "python-package"], ["ml-model", "model"], ["dataset"], ["tool"], ["compiler"], ["lib"]],
    "soft": [["lib", "python-package"], ["compiler"], ["tool"], ["dataset"], ["model"], ["lib"]],
    "program": [["mlperf", "benchmark"], ["demo"], ["tool"], ["image-classification"], ["object-detection"]],
}
_TOPICS = [
    "numpy", "onnxruntime", "torch", "tensorflow", "tflite", "opencv", "pillow", "scipy", "loadgen", "mlperf",
    "imagenet", "coco", "squad", "resnet50", "mobilenet", "ssd", "bert", "efficientnet", "llvm", "gcc",
    "cmake", "protobuf", "cuda", "cudnn", "tensorrt", "armnn", "openvino", "tvm", "python", "java",
]
_VARIANTS = ["cpu", "gpu", "fp32", "int8", "fp16", "nchw", "nhwc", "side.224", "side.300", "onnx", "tf", "pytorch",
             "from-source", "prebuilt", "v1.5", "v2", "v3", "min", "full", "val", "train"]


def _entry_tags(rng: random.Random, module: str, topic: str) -> list[str]:
    tags = list(rng.choice(_KIND_TAGS.get(module, [[module]])))
    tags.append(topic)
    tags.extend(rng.sample(_VARIANTS, rng.randint(1, 4)))
    return list(dict.fromkeys(tags))


def generate_ck_repo(root: Path, *, name: str = "bench@ck-mlops", seed: int = 1354) -> dict[str, int]:
    """Write a CK-format repo of TOTAL_ENTRIES entries in MODULE_MIX under ``root``; return the counts."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / ".ckr.json").write_text(json.dumps({
        "data_uoa": name, "data_uid": "%016x" % rng.getrandbits(64), "data_alias": name, "data_name": name,
        "dict": {"shared": "git", "url": f"https://example.org/{name}.git", "repo_deps": []},
    }, indent=1))
    cm = root / ".cm"
    cm.mkdir(exist_ok=True)
    counts: dict[str, int] = {}
    for module, count in MODULE_MIX.items():
        module_uid = "%016x" % rng.getrandbits(64)
        (cm / f"alias-a-{module}").write_text(module_uid + "\n")
        (cm / f"alias-u-{module_uid}").write_text(module + "\n")
        mdir = root / module
        (mdir / ".cm").mkdir(parents=True, exist_ok=True)
        for number in range(count):
            topic = rng.choice(_TOPICS)
            alias = f"{module.replace('.', '-')}-{topic}-{number:04d}"
            uid = "%016x" % rng.getrandbits(64)
            edir = mdir / alias / ".cm"
            edir.mkdir(parents=True)
            meta = {"tags": _entry_tags(rng, module, topic), "customize": {"version": f"{rng.randint(1, 3)}.{rng.randint(0, 12)}"},
                    "deps": {"python": {"tags": "compiler,python", "local": "yes"}}}
            (edir / "meta.json").write_text(json.dumps(meta, indent=1))
            (edir / "info.json").write_text(json.dumps({"backup_data_uid": uid, "backup_module_uoa": module,
                                                        "backup_module_uid": module_uid, "data_name": alias}))
            (edir / "desc.json").write_text("{}")
            (mdir / ".cm" / f"alias-a-{alias}").write_text(uid + "\n")
            (mdir / ".cm" / f"alias-u-{uid}").write_text(alias + "\n")
        counts[module] = count
    assert sum(counts.values()) == TOTAL_ENTRIES
    return counts


# The searches every round sends, round-robin: tag searches of several sizes and a module listing.
QUERIES: list[dict] = [
    {"action": "search", "module": "package", "tags": "lib,python-package"},
    {"action": "search", "module": "package", "tags": "numpy,cpu"},
    {"action": "search", "module": "soft", "tags": "compiler"},
    {"action": "search", "module": "program", "tags": "mlperf,-gpu"},
    {"action": "search", "module": "package", "tags": "ml-model,resnet50"},
    {"action": "search", "module": "os", "tags": "os"},
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _expected_counts(home: Path) -> list[int]:
    from ckx.api import access
    from ckx.core.report import Reporter
    from ckx.store.context import Context
    from ckx.core.home import Home

    ctx = Context(Home(home), reporter=Reporter(), quiet=True, interactive=False)
    try:
        return [len(access(dict(q), context=ctx)["entries"]) for q in QUERIES]
    finally:
        ctx.close()


def _client_worker(port: int, token: str, count: int, offset: int, expected: list[int], latencies: list[float],
                   errors: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    try:
        for i in range(count):
            index = (offset + i) % len(QUERIES)
            body = json.dumps(QUERIES[index])
            start = time.perf_counter()
            conn.request("POST", "/api", body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            latencies.append(time.perf_counter() - start)
            if response.status != 200:
                errors.append(f"HTTP {response.status}: {data[:200]!r}")
                continue
            found = len(json.loads(data)["entries"])
            if found != expected[index]:
                errors.append(f"query {index}: {found} entries, expected {expected[index]}")
    finally:
        conn.close()


def _http_round(port: int, token: str, requests: int, threads: int, expected: list[int]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    errors: list[str] = []
    per_thread = requests // threads
    workers = [threading.Thread(target=_client_worker, args=(port, token, per_thread, t, expected, latencies, errors))
               for t in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise SystemExit(f"wrong answers from the server: {errors[:5]}")
    return per_thread * threads / elapsed, latencies


def _access_round(home: Path, requests: int, expected: list[int], *, reuse: bool) -> tuple[float, list[float]]:
    """Searches through access(): a fresh Context per call (as a script calls it), or one reused."""
    from ckx.api import access
    from ckx.core.report import Reporter
    from ckx.store.context import Context
    from ckx.core.home import Home

    latencies: list[float] = []
    shared = Context(Home(home), reporter=Reporter(), quiet=True, interactive=False) if reuse else None
    start = time.perf_counter()
    try:
        for i in range(requests):
            index = i % len(QUERIES)
            t0 = time.perf_counter()
            result = access(dict(QUERIES[index]), context=shared)
            latencies.append(time.perf_counter() - t0)
            if len(result.get("entries", ())) != expected[index]:
                raise SystemExit(f"access(): query {index} gave {result}")
    finally:
        if shared is not None:
            shared.close()
    return requests / (time.perf_counter() - start), latencies


def _status(port: int, token: str) -> int:
    """The HTTP status of one search sent with ``token`` (empty: no Authorization header)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        conn.request("POST", "/api", body=json.dumps(QUERIES[0]), headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of process ``pid`` so far (Linux /proc), or None where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _measured_round(pid: int, port: int, token: str, requests: int, threads: int,
                    expected: list[int]) -> tuple[float, list[float], float | None]:
    """One HTTP round, with the server's CPU seconds per search (less sensitive to a loaded machine)."""
    before = _cpu_seconds(pid)
    rate, latencies = _http_round(port, token, requests, threads, expected)
    after = _cpu_seconds(pid)
    cpu = None if before is None or after is None else (after - before) / len(latencies)
    return rate, latencies, cpu


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def serve_baseline(port: int) -> None:
    """Serve $CKX_HOME's API on ``port`` as before the token and the pool: no token check, a thread per connection."""
    from ckx.core.home import Home  # reason: imported in the server's own process, with its CKX_HOME
    from ckx.web.server import ApiHandler, ApiServer  # reason: as above

    class UncheckedHandler(ApiHandler):
        def authorise(self, method: str, query: list[tuple[str, str]]) -> bool:
            return False  # every request passes, as when no token was needed

    class ThreadPerConnectionServer(socketserver.ThreadingMixIn, ApiServer):
        """ThreadingMixIn's process_request comes first: one new thread per connection, unbounded."""

        handler_class = UncheckedHandler
        daemon_threads = True
        block_on_close = False

    server = ThreadPerConnectionServer(("127.0.0.1", port), home=Home.from_env(), token="unused")
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _wait_for(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"ckx serve exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("ckx serve did not start listening")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)  # Ctrl-C: the server closes and forgets its token file
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def _cpu_line(cpu: dict[str, list[float]]) -> str:
    """The servers' median CPU time per search, which a loaded machine disturbs less than wall-clock rates."""
    if not cpu["served"] or not cpu["baseline"]:
        return ""
    served, base = statistics.median(cpu["served"]), statistics.median(cpu["baseline"])
    return (f" Server CPU per search: {served * 1000:.2f} ms with token and pool, {base * 1000:.2f} ms baseline "
            f"({served / base:.2f}x).")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print and write the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=400, help="search requests per round")
    parser.add_argument("--threads", type=int, default=4, help="client threads (one keep-alive connection each)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "server.md")
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return 0

    with tempfile.TemporaryDirectory(prefix="ckx-bench-server-") as tmp:
        tmp_path = Path(tmp)
        home = tmp_path / "home"
        repo_dir = tmp_path / "bench-ck-mlops"
        counts = generate_ck_repo(repo_dir)
        env = dict(os.environ, CKX_HOME=str(home), PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("CKX_SERVE_TOKEN", None)
        subprocess.run([sys.executable, "-m", "ckx", "add", "repo:bench@ck-mlops", f"--path={repo_dir}", "--quiet"],
                       env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([sys.executable, "-m", "ckx", "reindex"], env=env, check=True, capture_output=True, timeout=300)
        os.environ["CKX_HOME"] = str(home)
        expected = _expected_counts(home)

        port, baseline_port = _free_port(), _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "ckx", "serve", f"--port={port}", "--quiet"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        baseline = subprocess.Popen([sys.executable, __file__, f"--serve-baseline={baseline_port}"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(port, proc)
            _wait_for(baseline_port, baseline)
            token = (home / "serve-token").read_text().strip()
            rejected = _status(port, "")
            if rejected != 401:
                raise SystemExit(f"ckx serve answered {rejected} to a request without the token")
            servers = {"served": (proc.pid, port, token), "baseline": (baseline.pid, baseline_port, "unused")}
            http_rounds: dict[str, list[tuple[float, list[float]]]] = {name: [] for name in servers}
            cpu: dict[str, list[float]] = {name: [] for name in servers}
            for name, (_, p, t) in servers.items():  # warm-up: connections, contexts, page cache
                _http_round(p, t, 60, args.threads, expected)
            for number in range(args.rounds):  # alternate, so both servers see the same load
                order = list(servers) if number % 2 == 0 else list(reversed(servers))
                for name in order:
                    rate, latencies, seconds = _measured_round(*servers[name], args.requests, args.threads, expected)
                    http_rounds[name].append((rate, latencies))
                    if seconds is not None:
                        cpu[name].append(seconds)
        finally:
            _stop(proc)
            _stop(baseline)
        _access_round(home, 30, expected, reuse=False)
        fresh_rounds = [_access_round(home, args.requests // 2, expected, reuse=False) for _ in range(args.rounds)]
        reuse_rounds = [_access_round(home, args.requests, expected, reuse=True) for _ in range(args.rounds)]

    def row(label: str, rounds: list[tuple[float, list[float]]]) -> tuple[str, float, float]:
        rates = [r for r, _ in rounds]
        lat = [x for _, xs in rounds for x in xs]
        median, p50 = statistics.median(rates), _percentile(lat, 0.5)
        return (f"| {label} | {median:,.0f} | {min(rates):,.0f}-{max(rates):,.0f} | "
                f"{p50 * 1000:.2f} | {_percentile(lat, 0.99) * 1000:.2f} |", median, p50)

    http_row, http_rate, http_p50 = row(f"ckx serve: token, {DEFAULT_LIMITS.server_workers} pooled threads ({args.threads} keep-alive clients)",
                                        http_rounds["served"])
    base_row, base_rate, base_p50 = row("baseline: no token check, a thread per connection", http_rounds["baseline"])
    fresh_row, fresh_rate, _ = row("in-process access(), new Context per call", fresh_rounds)
    reuse_row, reuse_rate, _ = row("in-process access(), one Context reused", reuse_rounds)
    paired = statistics.median(a / b for (a, _), (b, _) in zip(http_rounds["served"], http_rounds["baseline"]))
    cpus = os.cpu_count()
    lines = [
        "# ckx serve: search throughput",
        "",
        f"Repo: {sum(counts.values())} CK-format entries ({', '.join(f'{m} {n}' for m, n in list(counts.items())[:9])}, "
        f"rest in {len(counts) - 9} small modules); {len(QUERIES)} tag searches round-robin; "
        f"{args.rounds} rounds of {args.requests} requests per server, alternating; Python {sys.version.split()[0]}, "
        f"{cpus} CPUs.",
        "",
        "| path | searches/s (median) | range | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
        http_row,
        base_row,
        fresh_row,
        reuse_row,
        "",
        f"Token and pool: {http_rate / base_rate:.2f}x the baseline's searches/s (median of the paired rounds' "
        f"ratios: {paired:.2f}x), p50 {http_p50 / base_p50:.2f}x." + _cpu_line(cpu),
        f"HTTP / access() with a new Context: {http_rate / fresh_rate:.2f}x; "
        f"HTTP / access() with a reused Context: {http_rate / reuse_rate:.2f}x.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
