"""Search and index speed at 1,000, 10,000 and 50,000 entries, with start-up against bare Python.

Generates native repos with ck-mlops' module mix and CK-like tags (8 to 15 per entry), then measures in one
run: in-process tag search (median of >= 20), CLI ``ckx search package --tags=...`` wall time, a cold index
build, an incremental refresh after touching one entry, and ``ckx version`` against ``python -c pass``.

    python benchmarks/search.py [--sizes 1000,10000,50000] [--out benchmarks/out/search.md]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Module mix of mlcommons@ck-mlops (1,354 entries), as fractions.
MODULE_MIX = {"package": 558, "soft": 265, "program": 163, "os": 79, "compiler": 56, "script": 55,
              "docker": 31, "demo": 30, "dataset": 22, "module": 95}
VOCABULARY = (
    "lib python-package model image-classification object-detection onnx tensorflow pytorch tflite mlperf "
    "resnet50 mobilenet ssd bert dataset imagenet coco squad val train aux preprocessed raw jpg fp32 int8 "
    "quantized cpu gpu cuda tensorrt openvino armnn compiler gcc llvm python cmake loadgen inference "
    "v1.0 v1.1 v2.0 v3.11 nchw nhwc side.224 side.300 downloaded from-source prebuilt linux android "
    "x86_64 aarch64 benchmark accuracy performance offline server singlestream multistream tool"
).split()
QUERY_TAGS = "lib,python-package,onnx"


def generate(root: Path, count: int, seed: int = 7) -> None:
    """A native repo of ``count`` entries spread over modules like ck-mlops."""
    rng = random.Random(seed)
    total = sum(MODULE_MIX.values())
    (root).mkdir(parents=True)
    (root / "ckx-repo.json").write_text(json.dumps({"name": root.name, "uid": "%016x" % rng.getrandbits(64),
                                                    "schema_version": 1}))
    dirs = {"package": "packages", "soft": "soft", "program": "programs"}
    made = 0
    modules = list(MODULE_MIX.items())
    for position, (module, weight) in enumerate(modules):
        share = count - made if position == len(modules) - 1 else round(count * weight / total)
        module_dir = root / dirs.get(module, module)
        module_dir.mkdir()
        for i in range(share):
            uid = "%016x" % rng.getrandbits(64)
            alias = f"{module}-{i:06d}"
            tags = rng.sample(VOCABULARY, rng.randint(8, 15))
            entry = module_dir / alias
            entry.mkdir()
            meta = {"uid": uid, "alias": alias, "tags": tags, "schema_version": 1,
                    "name": f"{module} {i}", "version": f"{rng.randint(0, 3)}.{rng.randint(0, 20)}"}
            (entry / "meta.json").write_text(json.dumps(meta))
        made += share


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_cli(args: list[str], env: dict) -> None:
    subprocess.run([sys.executable, "-m", "ckx", *args], env=env, check=True, stdout=subprocess.DEVNULL)


def measure(size: int, work: Path, repeat: int) -> dict:
    from ckx.core.report import Reporter
    from ckx.store.context import Context
    from ckx.core.home import Home
    from ckx.store.index import Query

    repo = work / f"repo-{size}"
    home = work / f"home-{size}"
    generate(repo, size)
    env = dict(os.environ, CKX_HOME=str(home), PYTHONPATH=str(ROOT))
    run_cli(["add", f"repo:bench{size}", f"--path={repo}", "--quiet"], env)

    os.environ["CKX_HOME"] = str(home)
    ctx = Context(Home(home), reporter=Reporter(), quiet=True, interactive=False)
    index = ctx.index
    # Cold build: an empty index, every meta file read.
    index.rebuild()  # warm the page cache once so that "cold" measures ckx, not the disk
    start = time.perf_counter()
    index.rebuild()
    cold = time.perf_counter() - start
    query = Query(module="package", tags=tuple(QUERY_TAGS.split(",")))
    hits = len(index.query(query))
    in_process = median_time(lambda: index.query(query), max(repeat, 20))
    # Incremental refresh after touching one entry (its meta rewritten in place).
    touched = repo / "packages" / "package-000003" / "meta.json"

    def touch_and_refresh(scope):
        data = json.loads(touched.read_text())
        data["name"] = f"touched {time.perf_counter_ns()}"
        touched.write_text(json.dumps(data))
        start = time.perf_counter()
        stats = index.refresh(scope, force=True)
        elapsed = time.perf_counter() - start
        assert stats["updated"] == 1, stats
        return elapsed

    refresh_module = statistics.median(touch_and_refresh(["package"]) for _ in range(repeat))
    refresh_all = statistics.median(touch_and_refresh(None) for _ in range(repeat))
    ctx.close()
    cli = median_time(lambda: run_cli(["search", "package", f"--tags={QUERY_TAGS}"], env), repeat)
    return {"size": size, "hits": hits, "in_process_ms": in_process * 1e3, "cli_ms": cli * 1e3,
            "cold_s": cold, "refresh_module_ms": refresh_module * 1e3, "refresh_all_ms": refresh_all * 1e3}


def startup(repeat: int) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    bare = median_time(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), repeat)
    ckx = median_time(lambda: subprocess.run([sys.executable, "-m", "ckx", "version"], env=env, check=True,
                                             stdout=subprocess.DEVNULL), repeat)
    return bare, ckx


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "search.md"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ckx-search-bench-"))
    try:
        rows = [measure(int(size), work, args.repeat) for size in args.sizes.split(",")]
        bare, ckx = startup(max(args.repeat, 15))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"Search benchmark (`python benchmarks/search.py`), tags `{QUERY_TAGS}` on module package; medians.",
        "",
        "| entries | hits | in-process search (ms) | CLI search (ms) | cold index build (s) | refresh, 1 entry touched, module (ms) | refresh, all modules (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['size']:,} | {r['hits']} | {r['in_process_ms']:.2f} | {r['cli_ms']:.0f} | {r['cold_s']:.2f} |"
                     f" {r['refresh_module_ms']:.1f} | {r['refresh_all_ms']:.1f} |")
    lines += ["", f"Start-up: `python -c pass` {bare * 1e3:.0f} ms, `python -m ckx version` {ckx * 1e3:.0f} ms"
              f" ({ckx / bare:.2f}x)."]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
