"""Sweeps: the spec and its combinations, resuming after a kill, failed combinations, and the Ray executor."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ckx.core.errors import UsageError
from ckx.runs.sweep import combinations, parse_sweep
from interrupt import ctrl_c_reaches_child

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = "program:image-classification-onnx-cpu"
SHORT = ["--", "--count", "6", "--time", "1"]
SWEEP = ["benchmark", PROGRAM, "--cmd_key=performance-offline", "--env.MLPERF_BACKEND=null", "--offline",
         "--sweep.env.MLPERF_THREADS=1,2", "--sweep.env.MLPERF_MAX_BATCHSIZE=8,32",
         "--sweep.cmd_key=performance-offline,performance-singlestream", "--record", "--skip_print_timers"]
EXPECTED = {(threads, batch, key) for threads in ("1", "2") for batch in ("8", "32")
            for key in ("performance-offline", "performance-singlestream")}


def points_of(home: Path, name: str) -> dict[str, dict]:
    folder = home / "repos" / "local" / "experiments" / name / "points"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def combination_of(point: dict) -> tuple[str, str, str]:
    env = point["choices"]["env"]
    return env["MLPERF_THREADS"], env["MLPERF_MAX_BATCHSIZE"], point["choices"]["cmd_key"]


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, CKX_HOME=str(home), PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


@pytest.fixture
def ckx_json(ckx_home):
    """Run ckx with --json (put before a ``--``, whose words go to the program) and return (code, document)."""

    def run(*args, env: dict | None = None, timeout: float = 600):
        words = [str(a) for a in args]
        cut = words.index("--") if "--" in words else len(words)
        proc = subprocess.run([sys.executable, "-m", "ckx", *words[:cut], "--json", *words[cut:]],
                              env=cli_env(ckx_home, **(env or {})), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        try:
            return proc.returncode, json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"not JSON: {proc.stdout[-2000:]!r}\nstderr: {proc.stderr[-3000:]}") from None

    return run


# -- the spec ------------------------------------------------------------------------------------
def test_the_combinations_are_the_cartesian_product_less_the_excluded_ones():
    spec = parse_sweep({"env": {"THREADS": "1,2", "BATCH": [8, 32]}, "cmd_key": ["a", "b"],
                        "exclude": [{"env.THREADS": 2, "cmd_key": "b"}, {"env": {"BATCH": 8}, "cmd_key": "a"}]})
    assert spec.params == {"env.THREADS": ["1", "2"], "env.BATCH": ["8", "32"], "cmd_key": ["a", "b"]}
    combos = combinations(spec, cmd_key=None, env={"FIXED": "x"}, dep_add_tags={}, deps={})
    got = [(c.env["THREADS"], c.env["BATCH"], c.cmd_key) for c in combos]
    # 8 less the two with THREADS=2 and b, less the two with BATCH=8 and a
    assert got == [("1", "8", "b"), ("1", "32", "a"), ("1", "32", "b"), ("2", "32", "a")]
    assert all(c.env["FIXED"] == "x" for c in combos)
    assert [c.index for c in combos] == [1, 2, 3, 4]
    assert combos[0].label == "env.THREADS=1 env.BATCH=8 cmd_key=b"


def test_dependency_tags_and_forced_envs_can_be_swept():
    spec = parse_sweep({"dep_add_tags": {"lib": "v1,v2"}, "deps.python": "aaaa"})
    combos = combinations(spec, cmd_key="k", env={}, dep_add_tags={"model": "resnet"}, deps={})
    assert [(c.dep_add_tags, c.deps) for c in combos] == [
        ({"lib": "v1", "model": "resnet"}, {"python": "aaaa"}), ({"lib": "v2", "model": "resnet"}, {"python": "aaaa"})]


@pytest.mark.parametrize("raw, message", [
    ({"threads": "1,2"}, "only cmd_key, env.VAR"),
    ({"env": {"X": ""}}, "has no values"),
    ({"env": {"X": "1,1"}}, "lists a value twice"),
    ({"env": "1,2"}, "needs names"),
    ({}, "names no parameter"),
    ({"env": {"X": "1,2"}, "exclude": [{"env.Y": 1}]}, "does not vary"),
    ({"env": {"X": "1,2"}, "exclude": "X=1"}, "must be a list"),
])
def test_a_malformed_sweep_is_a_usage_error(raw, message):
    with pytest.raises(UsageError, match=message):
        parse_sweep(raw)


def test_excluding_every_combination_is_refused():
    spec = parse_sweep({"env": {"X": "1"}, "exclude": [{"env.X": "1"}]})
    with pytest.raises(UsageError, match="leaves no combination"):
        combinations(spec, cmd_key="k", env={}, dep_add_tags={}, deps={})


def test_sweep_options_are_checked_before_anything_runs(cli):
    proc = cli("benchmark", PROGRAM, "--cmd_key=performance-offline", "--sweep.env.MLPERF_THREADS=1,2", *SHORT)
    assert proc.returncode == 2 and "add --record" in proc.stderr
    proc = cli("benchmark", PROGRAM, "--sweep.cmd_key=performance-offline,no-such-key", "--plan")
    assert proc.returncode == 2 and "no command key 'no-such-key'" in proc.stderr
    proc = cli("benchmark", PROGRAM, "--cmd_key=performance-offline", "--plan")
    assert proc.returncode == 2 and "--plan applies to a sweep" in proc.stderr
    proc = cli("benchmark", PROGRAM, "--sweep.env.X=1,2", "--env.X=3", "--cmd_key=performance-offline", "--plan")
    assert proc.returncode == 2 and "both fixed and swept" in proc.stderr


def test_a_sweep_from_a_yaml_file_with_exclude_rules(ckx_json, tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text("sweep:\n  env:\n    MLPERF_THREADS: [1, 2]\n  cmd_key: [performance-offline, performance-singlestream]\n"
                    "  exclude:\n    - {env.MLPERF_THREADS: 2, cmd_key: performance-singlestream}\n")
    code, data = ckx_json("benchmark", PROGRAM, f"@{spec}", "--env.MLPERF_BACKEND=null", "--plan",
                          "--record_uoa=from-yaml")
    assert code == 0, data
    assert [c["params"] for c in data["combinations"]] == [
        {"env.MLPERF_THREADS": "1", "cmd_key": "performance-offline"},
        {"env.MLPERF_THREADS": "1", "cmd_key": "performance-singlestream"},
        {"env.MLPERF_THREADS": "2", "cmd_key": "performance-offline"}]
    assert data["counts"] == {"done": 0, "failed": 0, "todo": 3} and data["expected_s"] is None


# -- running: local ------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_local_sweep_killed_after_three_points_resumes_with_the_other_five(cli, ckx_json, ckx_home):
    args = [*SWEEP, "--record_uoa=grid", *SHORT]
    proc = subprocess.Popen([sys.executable, "-m", "ckx", *args], env=cli_env(ckx_home), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while len(points_of(ckx_home, "grid")) < 3:
            assert proc.poll() is None, "the sweep ended before it recorded 3 points"
            assert time.monotonic() < deadline, "the sweep recorded fewer than 3 points in 300 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    recorded = points_of(ckx_home, "grid")
    assert len(recorded) == 3, "the kill came after the 3rd point, before the 4th"
    done_before = {combination_of(p) for p in recorded.values()}

    code, plan = ckx_json(*args[:-len(SHORT)], "--plan", *SHORT)
    assert code == 0, plan
    assert len(plan["combinations"]) == 8 and plan["counts"] == {"done": 3, "failed": 0, "todo": 5}
    assert plan["to_run"] == 5 and plan["expected_s"] > 0
    proc = cli(*args[:-len(SHORT)], "--plan", *SHORT)
    assert "3 done" in proc.stdout and "5 to run" in proc.stdout and "expected time" in proc.stdout
    assert len(points_of(ckx_home, "grid")) == 3  # --plan ran nothing

    code, data = ckx_json(*args, timeout=600)
    assert code == 0, data
    assert data["skipped"] == 3 and len(data["ran"]) == 5 and data["failed"] == []
    ran = {(c["params"]["env.MLPERF_THREADS"], c["params"]["env.MLPERF_MAX_BATCHSIZE"], c["params"]["cmd_key"])
           for c in data["combinations"] if c["point"] in {r["point"] for r in data["ran"]}}
    assert ran == EXPECTED - done_before
    points = points_of(ckx_home, "grid")
    assert len(points) == 8 and {combination_of(p) for p in points.values()} == EXPECTED
    assert all(len(p["repetitions"]) == 1 and p.get("status", "ok") == "ok" for p in points.values())
    assert all(p["sweep"]["params"]["cmd_key"] == p["choices"]["cmd_key"] for p in points.values())
    for uid, point in points.items():  # the run's result.json is kept with the point
        kept = ckx_home / "repos/local/experiments/grid/points" / uid / "files" / "1" / "result.json"
        assert json.loads(kept.read_text())["metric"]["value"] == point["repetitions"][0]["characteristics"]["metric"]["value"]

    code, again = ckx_json(*args)  # everything is recorded: nothing runs
    assert code == 0 and again["skipped"] == 8 and again["ran"] == []
    code, forced = ckx_json(*args[:-len(SHORT)], "--force", "--sweep.cmd_key=performance-offline",
                            "--cmd_key=performance-offline", *SHORT)
    assert code == 0 and len(forced["ran"]) == 4
    assert sorted(len(p["repetitions"]) for p in points_of(ckx_home, "grid").values()) == [1] * 4 + [2] * 4


@pytest.mark.slow
def test_a_failing_combination_is_recorded_as_failed_and_the_others_complete(cli, ckx_json, ckx_home):
    args = ["benchmark", PROGRAM, "--cmd_key=performance-offline", "--env.MLPERF_BACKEND=null", "--offline",
            "--sweep.env.MLPERF_THREADS=1,bogus,2", "--record", "--record_uoa=bad", *SHORT]
    code, data = ckx_json(*args)
    assert code == 6, data
    assert "1 of 3 combination(s) failed" in data["error"] and "MLPERF_THREADS=bogus" in data["error"]
    points = points_of(ckx_home, "bad")
    assert len(points) == 3
    failed = [p for p in points.values() if p.get("status") == "failed"]
    assert len(failed) == 1 and failed[0]["choices"]["env"]["MLPERF_THREADS"] == "bogus"
    assert failed[0]["repetitions"] == [] and "invalid int value: 'bogus'" in failed[0]["failure"]["log_tail"]
    good = [p for p in points.values() if p.get("status", "ok") == "ok"]
    assert sorted(p["choices"]["env"]["MLPERF_THREADS"] for p in good) == ["1", "2"]
    proc = cli("show", "experiment:bad")
    assert "FAILED" in proc.stdout and "invalid int value: 'bogus'" in proc.stdout

    code, plan = ckx_json(*args[:-len(SHORT)], "--plan", *SHORT)
    assert plan["counts"] == {"done": 2, "failed": 1, "todo": 0} and plan["to_run"] == 1
    # the failed combination runs again; with a good value in its place it would be replaced
    code, data = ckx_json(*args)
    assert code == 6 and data["error"].startswith("1 of 1 combination(s) failed")
    assert len(points_of(ckx_home, "bad")) == 3  # the new failure replaced the old one

    stop = ["benchmark", PROGRAM, "--cmd_key=performance-offline", "--env.MLPERF_BACKEND=null", "--offline",
            "--sweep.env.MLPERF_THREADS=bogus,worse,1", "--record", "--record_uoa=stop", "--max_failures=1", *SHORT]
    code, data = ckx_json(*stop)
    assert code == 6 and "--max_failures=1" in data["error"] and "2 combination(s) not run" in data["error"]
    assert len(points_of(ckx_home, "stop")) == 1


# -- running: Ray --------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ray_cluster(ckx_home):
    """A one-node Ray cluster (2 CPUs, the ckx_node resource once) started with `ray start --head --block`."""
    pytest.importorskip("ray")
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = cli_env(ckx_home, RAY_AUTH_MODE="disabled")  # a loopback test cluster: no token to hand around
    ray = Path(sys.executable).with_name("ray")
    proc = subprocess.Popen([str(ray), "start", "--head", "--block", "--num-cpus=2", '--resources={"ckx_node": 1}',
                             f"--port={port}", f"--temp-dir={temp}", "--include-dashboard=false",
                             "--disable-usage-stats"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=ctrl_c_reaches_child)
    try:
        yield {"address": f"127.0.0.1:{port}", "env": env, "proc": proc}
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # ray start --block stops its processes on Ctrl-C
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_the_ray_executor_records_the_same_points_as_the_local_one(ckx_json, ckx_home, ray_cluster):
    code, local = ckx_json(*SWEEP, "--record_uoa=here", *SHORT, timeout=600)
    assert code == 0 and len(local["ran"]) == 8, local
    args = [*SWEEP, "--record_uoa=there", "--executor=ray", f"--ray_address={ray_cluster['address']}", *SHORT]
    code, data = ckx_json(*args, env={"RAY_AUTH_MODE": "disabled"}, timeout=600)
    assert code == 0, data
    assert len(data["ran"]) == 8 and data["failed"] == [] and data["executor"] == "ray"
    here, there = points_of(ckx_home, "here"), points_of(ckx_home, "there")
    assert len(there) == 8 and {combination_of(p) for p in there.values()} == EXPECTED
    # the same choices on the same machine: the same point uids, the same choices
    assert set(there) == set(here)
    for uid, point in there.items():
        assert point["choices"] == {**here[uid]["choices"], "deps": point["choices"]["deps"]}
        assert {k: v["version"] for k, v in point["choices"]["deps"].items()} == \
            {k: v["version"] for k, v in here[uid]["choices"]["deps"].items()}
        assert point["node"] and point["features"]["hostname"] == socket.gethostname()
        assert point["features"].get("platform_id")
        kept = ckx_home / "repos/local/experiments/there/points" / uid / "files" / "1" / "result.json"
        assert json.loads(kept.read_text())["metric"]["name"] == point["metric"]["name"]
    code, again = ckx_json(*args, env={"RAY_AUTH_MODE": "disabled"})
    assert code == 0 and again["skipped"] == 8 and again["ran"] == []


@pytest.mark.slow
def test_the_ray_executor_starts_and_stops_its_own_instance(ckx_json, ckx_home):
    pytest.importorskip("ray")
    args = ["benchmark", PROGRAM, "--cmd_key=performance-offline", "--env.MLPERF_BACKEND=null", "--offline",
            "--sweep.env.MLPERF_THREADS=1,bogus", "--record", "--record_uoa=own", "--executor=ray", *SHORT]
    code, data = ckx_json(*args, timeout=600)
    assert code == 6, data
    points = points_of(ckx_home, "own")
    (failed,) = [p for p in points.values() if p.get("status") == "failed"]
    assert failed["node"] and "invalid int value: 'bogus'" in failed["failure"]["log_tail"]
    assert failed["failure"]["message"].startswith(f"on node {failed['node']}")
    (good,) = [p for p in points.values() if p.get("status", "ok") == "ok"]
    assert good["choices"]["env"]["MLPERF_THREADS"] == "1" and good["node"]
