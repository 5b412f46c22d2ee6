"""`ckx push repo` and the merging `ckx pull repo`: two homes record into one repo through a bare git remote."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ckx.core.home import Home
from ckx.runs.experiment import Repetition
from ckx.runs.recording import record_point
from ckx.store.context import Context
from gitenv import GIT_IDENTITY, hermetic_git  # noqa: F401  (the fixture keeps git hermetic)

ROOT = Path(__file__).resolve().parent.parent
PLATFORM_A = {"hostname": "alpha", "machine": "x86_64", "cpu": {"model": "Alpha CPU", "logical_cores": 2},
              "os": {"name": "Debian 12"}}
PLATFORM_B = {"hostname": "beta", "machine": "aarch64", "cpu": {"model": "Beta CPU", "logical_cores": 8},
              "os": {"name": "Ubuntu 22.04"}}


def git(*args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(["git", *GIT_IDENTITY, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def ckx(home: Path, *args: str) -> tuple[int, dict]:
    env = dict(os.environ, CKX_HOME=str(home), PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "ckx", *args, "--json"], env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    return proc.returncode, json.loads(proc.stdout)


def record(home: Path, platform: dict, threads: str, value: float) -> str:
    ctx = Context(Home(home), quiet=True, interactive=False)
    try:
        choices = {"program": "tiny", "cmd_key": "performance-offline", "env": {"THREADS": threads},
                   "dep_add_tags": {}, "deps": {}}
        chars = {"metric": {"name": "samples_per_second", "value": value, "unit": "samples/s"}}
        outcome = record_point(ctx, name="fleet", choices=choices, features=platform, repo="shared",
                               repetitions=[Repetition(chars, duration_s=1.0)], tags=["fleet"])
        return outcome.point.uid
    finally:
        ctx.close()


def point_files(repo: Path) -> set[str]:
    return {p.stem for p in (repo / "experiments" / "fleet" / "points").glob("*.json")}


def remote_points(bare: Path) -> set[str]:
    names = git("--git-dir", str(bare), "ls-tree", "-r", "--name-only", "main").splitlines()
    return {Path(n).stem for n in names if n.startswith("experiments/fleet/points/") and n.endswith(".json")}


@pytest.fixture
def fleet(tmp_path) -> dict:
    """A bare remote holding an empty native repo, and two homes that pulled it as repo 'shared'."""
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "ckx-repo.json").write_text(json.dumps({"name": "shared", "uid": "5ade5ade5ade5a00", "schema_version": 1}))
    git("init", "-q", "-b", "main", cwd=seed)
    git("add", "-A", cwd=seed)
    git("commit", "-q", "-m", "an empty results repo", cwd=seed)
    bare = tmp_path / "results.git"
    git("clone", "-q", "--bare", str(seed), str(bare))
    homes = {}
    for name in ("a", "b"):
        home = tmp_path / f"home-{name}"
        code, data = ckx(home, "pull", "repo:shared", f"--url={bare.as_uri()}")
        assert code == 0 and data["repo"]["state"] == "cloned", data
        homes[name] = home
    return {"bare": bare, **homes, "repo_a": homes["a"] / "repos" / "shared", "repo_b": homes["b"] / "repos" / "shared"}


def test_two_homes_pushing_to_one_remote_end_with_all_points_from_both(fleet):
    a = {record(fleet["a"], PLATFORM_A, t, 10.0 * int(t)) for t in ("1", "2")}
    b = {record(fleet["b"], PLATFORM_B, t, 20.0 * int(t)) for t in ("1", "2")}
    assert not a & b  # another machine: other points

    code, data = ckx(fleet["a"], "push", "repo:shared")
    assert code == 0 and data["repo"]["state"] == "pushed" and data["repo"]["committed"], data
    assert remote_points(fleet["bare"]) == a
    code, data = ckx(fleet["b"], "push", "repo:shared")
    assert code == 0 and data["repo"]["state"] == "pushed", data
    assert {Path(p).stem for p in data["repo"]["merged_files"] if "/points/" in p} == a
    assert remote_points(fleet["bare"]) == a | b
    code, data = ckx(fleet["a"], "pull", "repo:shared")
    assert code == 0 and data["repo"]["state"] == "updated", data

    for home in (fleet["a"], fleet["b"]):
        code, shown = ckx(home, "show", "experiment:fleet")
        assert code == 0, shown
        (exp,) = shown["experiments"]
        assert {p["uid"] for p in exp["points"]} == a | b
        assert {p["platform"]["hostname"] for p in exp["points"]} == {"alpha", "beta"}
        code, only = ckx(home, "show", "experiment:fleet", "--machine=beta")
        assert {p["uid"] for p in only["experiments"][0]["points"]} == b
    meta_a = json.loads((fleet["repo_a"] / "experiments/fleet/meta.json").read_text())
    meta_b = json.loads((fleet["repo_b"] / "experiments/fleet/meta.json").read_text())
    assert meta_a == meta_b and {p["uid"] for p in meta_a["points"]} == a | b

    # a pull merges too: b commits a point of its own while a pushes another one
    b4 = record(fleet["b"], PLATFORM_B, "4", 80.0)
    git("add", "-A", cwd=fleet["repo_b"])
    git("commit", "-q", "-m", "beta: 4 threads", cwd=fleet["repo_b"])
    a4 = record(fleet["a"], PLATFORM_A, "4", 40.0)
    assert ckx(fleet["a"], "push", "repo:shared")[0] == 0
    code, data = ckx(fleet["b"], "pull", "repo:shared")
    assert code == 0 and data["repo"]["state"] == "merged", data
    assert point_files(fleet["repo_b"]) == a | b | {a4, b4}
    assert ckx(fleet["b"], "push", "repo:shared")[0] == 0
    assert remote_points(fleet["bare"]) == a | b | {a4, b4}
    code, data = ckx(fleet["b"], "push", "repo:shared")
    assert code == 0 and data["repo"]["state"] == "up-to-date" and data["repo"]["committed"] is None


def test_a_push_that_would_overwrite_someone_elses_point_is_refused(fleet):
    mine = record(fleet["a"], PLATFORM_A, "1", 10.0)
    theirs = record(fleet["b"], PLATFORM_A, "1", 99.0)  # the same choices on a machine described the same
    assert mine == theirs
    assert ckx(fleet["a"], "push", "repo:shared")[0] == 0
    before = git("--git-dir", str(fleet["bare"]), "rev-parse", "main")
    head = git("rev-parse", "HEAD", cwd=fleet["repo_b"])
    code, data = ckx(fleet["b"], "push", "repo:shared")
    assert code == 1, data
    assert "overwrite someone else's" in data["error"] and f"experiments/fleet/points/{mine}.json" in data["error"]
    assert git("--git-dir", str(fleet["bare"]), "rev-parse", "main") == before  # nothing pushed
    # b keeps its own point and is not left in the middle of a merge
    assert git("rev-parse", "HEAD~0", cwd=fleet["repo_b"]) != head  # its own commit was made
    assert not (fleet["repo_b"] / ".git" / "MERGE_HEAD").exists()
    point = json.loads((fleet["repo_b"] / f"experiments/fleet/points/{mine}.json").read_text())
    assert point["repetitions"][0]["characteristics"]["metric"]["value"] == 99.0
    code, data = ckx(fleet["b"], "pull", "repo:shared")
    assert code == 1 and "diverged" in data["error"] and "overwrite" in data["error"]


def test_push_needs_a_git_checkout_with_a_remote(tmp_path, ckx_home):
    code, data = ckx(ckx_home, "push", "repo:local")
    assert code == 2 and "not a git checkout" in data["error"]
    code, data = ckx(ckx_home, "push", "repo:nosuch")
    assert code == 3, data
