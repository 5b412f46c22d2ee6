"""What pulling mlcommons@ck-mlops costs: `ckx search` and `ckx install` of an installed package, with and without it.

Two homes: one plain, one with the real ck-mlops repo pulled into it (``ckx pull repo --url=file://...``
from a git remote made on disk from a copy of the checkout). In each, the package is installed once and
the index built; then the commands run through the real command line in subprocesses, interleaved
between the homes so that the machine's load falls on both alike. Prints a Markdown table of medians
and the ratio pulled/plain, writes it to benchmarks/out/ck_mlops.md, and exits 1 when a ratio is over
the goal (1.20).

    python benchmarks/ck_mlops.py [--repeat=9] [--ck-mlops=PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out" / "ck_mlops.md"
DEFAULT_CK_MLOPS = ROOT.parent / "shared" / "ck-mlops" / "repo"
GOAL = 1.20
TAGS = "lib,python-package,numpy"
COMMANDS = {
    "search": ["search", "package", f"--tags={TAGS}"],
    "install (installed)": ["install", "package", f"--tags={TAGS}"],
}
# Bytecode goes to a temporary cache, warmed before timing (an installed ckx has its .pyc files).
_PYCACHE = tempfile.mkdtemp(prefix="ckx-bench-pycache-")


def environ(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("PYTHONDONTWRITEBYTECODE", "CKX_OFFLINE", "CKX_URL_MAP", "CKX_TOOLS"):
        env.pop(name, None)
    env["PYTHONPYCACHEPREFIX"] = _PYCACHE
    env["CKX_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def ckx(home: Path, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``python -m ckx ARGS`` in ``home``; (wall seconds, the finished process). Fails loudly."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ckx", *args], capture_output=True, text=True,
                          env=environ(home), stdin=subprocess.DEVNULL, timeout=600, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"ckx {' '.join(args)} failed (exit {proc.returncode}) in {home}:\n{proc.stderr}")
    return elapsed, proc


def make_remote(source: Path, work: Path) -> Path:
    """A bare git repo on disk holding one commit of ``source``'s files."""
    tree = work / "ck-mlops"
    shutil.copytree(source, tree, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "init.defaultBranch=master"]
    subprocess.run([*git, "init", "-q"], cwd=tree, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tree, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "ck-mlops"], cwd=tree, check=True)
    remote = work / "ck-mlops.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(tree), str(remote)], check=True)
    shutil.rmtree(tree)
    return remote


def measure(source: Path, repeat: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="ckx-bench-ck-mlops-") as tmp:
        work = Path(tmp)
        remote = make_remote(source, work)
        homes = {"plain": work / "home-plain", "pulled": work / "home-pulled"}
        pull_s, _ = ckx(homes["pulled"], "pull", "repo", f"--url=file://{remote}")
        entries = {}
        for label, home in homes.items():
            for args in COMMANDS.values():  # install once, build the index and the bytecode: not timed
                ckx(home, *args)
                ckx(home, *args)
            _, proc = ckx(home, "list", "--json")
            entries[label] = sum(json.loads(proc.stdout).get("modules", {}).values())
        chosen = {label: json.loads(ckx(home, *COMMANDS["install (installed)"], "--json")[1].stdout)["package"]["cid"]
                  for label, home in homes.items()}
        if chosen["plain"] != chosen["pulled"]:
            raise SystemExit(f"the pull changed the package chosen: {chosen}")
        times: dict[str, dict[str, list[float]]] = {name: {"plain": [], "pulled": []} for name in COMMANDS}
        for turn in range(repeat):
            order = ("plain", "pulled") if turn % 2 == 0 else ("pulled", "plain")
            for name, args in COMMANDS.items():
                for label in order:
                    times[name][label].append(ckx(homes[label], *args)[0])
    rows = []
    for name, runs in times.items():
        plain, pulled = statistics.median(runs["plain"]), statistics.median(runs["pulled"])
        rows.append({"command": " ".join(COMMANDS[name]), "plain_ms": plain * 1e3, "pulled_ms": pulled * 1e3, "ratio": pulled / plain})
    return {"rows": rows, "entries": entries, "pull_s": pull_s, "chosen": chosen["plain"], "repeat": repeat}


def table(result: dict) -> str:
    lines = [
        f"# Pulling mlcommons@ck-mlops: cost per command ({platform.node()}, Python {platform.python_version()})",
        "",
        f"Entries: {result['entries']['plain']} without the pull, {result['entries']['pulled']} with it "
        f"(pull: {result['pull_s']:.1f} s). Medians of {result['repeat']} interleaved runs through the CLI; "
        f"tags `{TAGS}`, package chosen in both homes: `{result['chosen']}`. Goal: ratio at most {GOAL:.2f}.",
        "",
        "| command | without ck-mlops (ms) | with ck-mlops (ms) | ratio |",
        "|---|---:|---:|---:|",
    ]
    for row in result["rows"]:
        mark = "" if row["ratio"] <= GOAL else " (over the goal)"
        lines.append(f"| `ckx {row['command']}` | {row['plain_ms']:.0f} | {row['pulled_ms']:.0f} | "
                     f"{row['ratio']:.2f}{mark} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9, help="timed runs per command and home (default 9)")
    parser.add_argument("--ck-mlops", type=Path, default=DEFAULT_CK_MLOPS, help="a checkout of mlcommons/ck-mlops")
    args = parser.parse_args(argv)
    if not (args.ck_mlops / ".ckr.json").is_file():
        parser.error(f"{args.ck_mlops} is not a ck-mlops checkout (no .ckr.json)")
    result = measure(args.ck_mlops, max(1, args.repeat))
    text = table(result)
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    return 0 if all(row["ratio"] <= GOAL for row in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
