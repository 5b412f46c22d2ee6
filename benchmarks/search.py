"""Search and index speed at 1,000, 10,000 and 50,000 entries, with start-up against bare Python and CK 2.6.4.

Generates native repos with ck-mlops' module mix and CK-like tags (8 to 15 per entry), then measures in one
run: in-process tag search (median of >= 20), CLI ``ckx search package --tags=...`` wall time, a cold index
build, an incremental refresh after touching one entry, and ``ckx version`` against ``python -c pass``.
Then a CK-format repo of 50,000 entries (CK's own layout: ``.ckr.json``, alias files, ``.cm/meta.json``)
is searched from the command line by ckx and by CK 2.6.4 side by side, runs interleaved, with the ratio of
the medians; CK is skipped, with a message, when its ``ck`` command is not found (``--ck PATH``, or on PATH;
install it into a venv of its own: ``python -m venv /tmp/ck && /tmp/ck/bin/pip install ck==2.6.4``).

Bytecode goes to a temporary cache warmed before timing, as an installed ckx has its .pyc files.

    python benchmarks/search.py [--sizes 1000,10000,50000] [--ck-size 50000] [--ck PATH] [--out FILE]
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


CK_MODULE_UIDS = {"package": "1dc07ee0f4742028", "soft": "5e1100048ab875d7", "program": "b0ac08fe1d3c2615"}
# Bytecode of ckx (and of CK) in a temporary cache, never in the checkout.
PYCACHE = tempfile.mkdtemp(prefix="ckx-bench-pycache-")


def cli_environ(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a timed command: CKX_HOME, this checkout first on the path, cached bytecode."""
    env = dict(os.environ, CKX_HOME=str(home), PYTHONPATH=str(ROOT), PYTHONPYCACHEPREFIX=PYCACHE, **extra)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def generate_ck(root: Path, count: int, seed: int = 7) -> None:
    """A CK-format repo of ``count`` entries in CK's layout, spread over modules like ck-mlops."""
    rng = random.Random(seed)
    total = sum(MODULE_MIX.values())
    root.mkdir(parents=True)
    (root / ".ckr.json").write_text(json.dumps({
        "data_uoa": root.name, "data_uid": "%016x" % rng.getrandbits(64), "data_alias": root.name,
        "data_name": root.name, "dict": {"shared": "", "repo_deps": []}}))
    (root / ".cm").mkdir()
    made = 0
    modules = list(MODULE_MIX.items())
    for position, (module, weight) in enumerate(modules):
        share = count - made if position == len(modules) - 1 else round(count * weight / total)
        module_uid = CK_MODULE_UIDS.get(module, "%016x" % rng.getrandbits(64))
        (root / ".cm" / f"alias-a-{module}").write_text(module_uid + "\n")
        (root / ".cm" / f"alias-u-{module_uid}").write_text(module + "\n")
        module_dir = root / module
        (module_dir / ".cm").mkdir(parents=True)
        for i in range(share):
            uid = "%016x" % rng.getrandbits(64)
            alias = f"{module}-{i:06d}"
            cm = module_dir / alias / ".cm"
            cm.mkdir(parents=True)
            meta = {"tags": rng.sample(VOCABULARY, rng.randint(8, 15)),
                    "version": f"{rng.randint(0, 3)}.{rng.randint(0, 20)}"}
            (cm / "meta.json").write_text(json.dumps(meta))
            (cm / "info.json").write_text(json.dumps({
                "backup_data_uid": uid, "backup_module_uid": module_uid, "backup_module_uoa": module,
                "control": {"engine": "CK", "version": ["2", "6", "4"]}, "data_name": alias}))
            (cm / "desc.json").write_text("{}")
            (module_dir / ".cm" / f"alias-a-{alias}").write_text(uid + "\n")
            (module_dir / ".cm" / f"alias-u-{uid}").write_text(alias + "\n")
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


def timed(argv: list[str], env: dict) -> tuple[float, str]:
    """Wall seconds of one command, and its standard output."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return time.perf_counter() - start, proc.stdout


def find_ck(given: str | None) -> str | None:
    """The ``ck`` command to compare with, or None."""
    return given if given and Path(given).is_file() else shutil.which("ck")


def measure_ck_format(size: int, work: Path, repeat: int, ck: str | None) -> dict:
    """CLI search of a CK-format repo by ckx and by CK 2.6.4, interleaved; medians and their ratio."""
    name = f"ckbench{size}"
    repo = work / name
    generate_ck(repo, size)
    home = work / f"home-ck-{size}"
    env = cli_environ(home)
    run_cli(["add", f"repo:{name}", f"--path={repo}", "--quiet"], env)
    ckx_argv = [sys.executable, "-m", "ckx", "search", "package", f"--tags={QUERY_TAGS}"]
    runs: dict[str, list[float]] = {"python": [], "ckx": [], "ck": []}
    hits: dict[str, int] = {}
    ck_env = cli_environ(home, CK_REPOS=str(work / "ck-repos"))
    if ck:
        subprocess.run([ck, "add", f"repo:{name}", f"--path={repo}", "--quiet"], env=ck_env, check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for warm in range(2):  # the first runs build the index and the bytecode; they are not timed
        hits["ckx"] = timed(ckx_argv, env)[1].count(f"{name}:")
        if ck:
            hits["ck"] = timed([ck, "search", "package", f"--tags={QUERY_TAGS}"], ck_env)[1].count(f"{name}:")
    for _ in range(repeat):
        runs["python"].append(timed([sys.executable, "-c", "pass"], env)[0])
        runs["ckx"].append(timed(ckx_argv, env)[0])
        if ck:
            runs["ck"].append(timed([ck, "search", "package", f"--tags={QUERY_TAGS}"], ck_env)[0])
    medians = {key: statistics.median(values) * 1e3 for key, values in runs.items() if values}
    edited = repo / "package" / "package-000003" / ".cm" / "meta.json"
    data = json.loads(edited.read_text())
    data["tags"] = sorted(set(data["tags"]) | set(QUERY_TAGS.split(",")))
    with open(edited, "w") as handle:  # a hand edit in place: the next search must find it
        json.dump(data, handle)
    after_edit, out = timed(ckx_argv, env)
    if f"{name}:package:package-000003" not in out:
        raise AssertionError("the hand-edited entry was not found by the next search")
    return {"size": size, "medians": medians, "hits": hits, "after_edit_ms": after_edit * 1e3, "ck": ck}


def measure(size: int, work: Path, repeat: int) -> dict:
    from ckx.core.report import Reporter
    from ckx.store.context import Context
    from ckx.core.home import Home
    from ckx.store.index import Query

    repo = work / f"repo-{size}"
    home = work / f"home-{size}"
    generate(repo, size)
    env = cli_environ(home)
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
    env = cli_environ(Path(tempfile.mkdtemp(prefix="ckx-bench-home-")))
    bare = median_time(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), repeat)
    ckx = median_time(lambda: subprocess.run([sys.executable, "-m", "ckx", "version"], env=env, check=True,
                                             stdout=subprocess.DEVNULL), repeat)
    return bare, ckx


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--ck-size", type=int, default=50000, help="entries of the CK-format repo (0: skip)")
    parser.add_argument("--ck", help="the ck command of CK 2.6.4 (default: ck on PATH)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "search.md"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ckx-search-bench-"))
    try:
        rows = [measure(int(size), work, args.repeat) for size in args.sizes.split(",") if size]
        ck = find_ck(args.ck)
        if args.ck_size and not ck:
            print("CK 2.6.4 not found (pass --ck PATH or put ck on PATH): timing ckx alone on the CK-format repo")
        ck_row = measure_ck_format(args.ck_size, work, args.repeat, ck) if args.ck_size else None
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
    if ck_row:
        lines += ["", *ck_format_lines(ck_row)]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return 0


def ck_format_lines(row: dict) -> list[str]:
    """The side-by-side table of the CK-format repo."""
    medians, hits = row["medians"], row["hits"]
    lines = [f"CK-format repo of {row['size']:,} entries, `search package --tags={QUERY_TAGS}` from the command"
             " line, runs interleaved; medians.", "",
             "| command | hits | median (ms) |", "|---|---:|---:|",
             f"| `python -c pass` | | {medians['python']:.0f} |",
             f"| `ckx search` | {hits.get('ckx', 0)} | {medians['ckx']:.0f} |"]
    if "ck" in medians:
        lines.append(f"| CK 2.6.4 `ck search` | {hits.get('ck', 0)} | {medians['ck']:.0f} |")
        lines += ["", f"CK 2.6.4 / ckx: **{medians['ck'] / medians['ckx']:.1f}x** (ckx takes"
                  f" {medians['ckx'] / medians['ck']:.3f} of CK's time)."]
    else:
        lines += ["", "CK 2.6.4 was not found: no comparison."]
    lines.append(f"First ckx search after a hand edit of one meta file (found): {row['after_edit_ms']:.0f} ms.")
    return lines


if __name__ == "__main__":
    sys.exit(main())
