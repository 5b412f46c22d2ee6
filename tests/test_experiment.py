"""Experiments: statistics, the on-disk format, recording, migration, show, replay, export and benchmark."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from ckx.store.context import Context
from ckx.core.errors import MetaError, UsageError
from ckx.runs.experiment import Repetition, point_uid, read_experiment
from ckx.runs.export import export_rows, to_csv
from ckx.runs.recording import record_point
from ckx.runs.stats import compute_statistics, flatten, numeric_characteristics, point_statistics
from ckx.core.home import Home
from ckx.store.repo import init_native_repo
from ckx.store.repo_actions import add_repo

ROOT = Path(__file__).resolve().parent.parent

TINY_SCRIPT = r'''
import json, os, sys
state = os.environ["TINY_STATE"]
n = int(open(state).read()) + 1 if os.path.exists(state) else 1
with open(state, "w") as handle:
    handle.write(str(n))
if os.environ.get("TINY_FAIL_AT") and int(os.environ["TINY_FAIL_AT"]) == n:
    print("tiny failed on purpose", file=sys.stderr)
    sys.exit(3)
value = float(os.environ.get("TINY_BASE", "100")) + n
result = {"metric": {"name": "samples_per_second", "value": value, "unit": "samples/s"},
          "scenario": "Offline", "mode": "performance", "valid": True,
          "latency_ms": {"p50": 1000.0 / value, "p90": 1100.0 / value, "p99": 1200.0 / value},
          "loadgen": {"min_duration_ms": 1000}, "argv": sys.argv[1:]}
with open("result.json", "w") as handle:
    json.dump(result, handle)
with open("summary.txt", "w") as handle:
    handle.write(f"tiny run {n}: {value}\n")
'''

TINY_META = {
    "alias": "tiny", "uid": "7100000000000001", "schema_version": 1, "tags": ["tiny", "test"],
    "argv": ["{python}", "{entry_path}/tiny.py"],
    "run_cmds": {"performance-offline": {"run_vars": {"TINY_MODE": "perf"}}, "other": {"run_vars": {}}},
}

PLATFORM_A = {"hostname": "alpha", "machine": "x86_64", "cpu": {"model": "Alpha CPU", "logical_cores": 2},
              "os": {"name": "Debian 12"}}
PLATFORM_B = {"hostname": "beta", "machine": "aarch64", "cpu": {"model": "Beta CPU", "logical_cores": 8},
              "os": {"name": "Ubuntu 22.04"}}


def chars(value: float, **extra) -> dict:
    data = {"metric": {"name": "samples_per_second", "value": value, "unit": "samples/s"}, "scenario": "Offline",
            "mode": "performance", "valid": True, "latency_ms": {"p50": 1000 / value, "p99": 1300 / value}}
    data.update(extra)
    return data


def choices(**env) -> dict:
    return {"program": "tiny", "program_uid": "7100000000000001", "cmd_key": "performance-offline", "env": env,
            "dep_add_tags": {}, "offline": False,
            "deps": {"python": {"env_uid": "aaaaaaaaaaaaaaaa", "soft": "compiler.python", "version": "3.11.7",
                                "tags": ["compiler", "python"], "package": None}}}


@pytest.fixture
def home_ctx(ckx_home):
    context = Context(Home(ckx_home), quiet=True, interactive=False)
    yield context
    context.close()


@pytest.fixture
def tiny(tmp_path, monkeypatch, ckx_home):
    """A registered repo with the tiny program (and an empty built-in repo); the run counter file's path."""
    empty = tmp_path / "empty-builtin"
    init_native_repo(empty, "builtin", "00000000000000b1")
    monkeypatch.setenv("CKX_BUILTIN_REPO", str(empty))
    repo = tmp_path / "toys"
    init_native_repo(repo, "toys", "00000000000000c1")
    entry = repo / "programs" / "tiny"
    entry.mkdir(parents=True)
    (entry / "meta.json").write_text(json.dumps(TINY_META))
    (entry / "tiny.py").write_text(TINY_SCRIPT)
    setup = Context(Home(ckx_home), quiet=True, interactive=False)
    add_repo(setup, {"entry": "toys", "path": str(repo)})
    setup.close()
    state = tmp_path / "tiny-counter"
    monkeypatch.setenv("TINY_STATE", str(state))
    monkeypatch.delenv("TINY_FAIL_AT", raising=False)
    monkeypatch.delenv("TINY_BASE", raising=False)
    return state


def experiment_dir(home: Path, name: str, repo: str = "local") -> Path:
    return home / "repos" / repo / "experiments" / name


def load_points(path: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((path / "points").glob("*.json"))}


# -- statistics ----------------------------------------------------------------------------------
def test_statistics_agree_with_the_statistics_module_on_known_values():
    values = [10.0, 12.0, 14.0, 20.0]
    stats = compute_statistics(values)
    assert stats["n"] == 4 and stats["min"] == 10.0 and stats["max"] == 20.0
    assert stats["mean"] == pytest.approx(statistics.mean(values)) == pytest.approx(14.0)
    assert stats["median"] == pytest.approx(statistics.median(values)) == pytest.approx(13.0)
    assert stats["stdev"] == pytest.approx(statistics.stdev(values)) == pytest.approx(4.320493798938574)
    assert stats["range_pct"] == pytest.approx(100 * 10 / 14)
    assert stats["values"] == values


def test_statistics_of_one_value_a_zero_mean_and_no_values():
    one = compute_statistics([5])
    assert one["stdev"] == 0.0 and one["range_pct"] == 0.0 and one["median"] == 5.0
    assert compute_statistics([-1, 1])["range_pct"] is None
    with pytest.raises(ValueError):
        compute_statistics([])


def test_flatten_and_numeric_characteristics_keep_outcomes_only():
    data = {"a": {"b": 1, "c": [1, 2]}, "s": "text", "ok": True, "nan": float("nan"), "loadgen": {"x": 5},
            "rules": {"y": 6}, "schema_version": 1, "metric": {"value": 3.5}}
    assert flatten(data)["a.c"] == "1,2" and flatten(data)["a.b"] == 1
    numbers = numeric_characteristics(data)
    assert numbers == {"a.b": 1.0, "metric.value": 3.5}


def test_point_statistics_cover_keys_present_in_some_repetitions_and_the_duration():
    reps = [{"characteristics": chars(10.0), "duration_s": 1.0},
            {"characteristics": chars(20.0, accuracy={"top1": 70.0}), "duration_s": 3.0}]
    stats = point_statistics(reps)
    assert stats["metric.value"]["values"] == [10.0, 20.0]
    assert stats["accuracy.top1"]["n"] == 1
    assert stats["run.duration_s"]["mean"] == 2.0


def test_point_uid_is_stable_and_depends_on_choices_and_machine():
    first = point_uid(choices(THREADS="2", MODE="x"), PLATFORM_A)
    reordered = {"env": {"MODE": "x", "THREADS": "2"}, **{k: v for k, v in choices().items() if k != "env"}}
    reordered["deps"] = {"python": dict(reordered["deps"]["python"], env_uid="bbbbbbbbbbbbbbbb")}
    assert point_uid(reordered, dict(PLATFORM_A, memory={"total_gib": 3})) == first
    assert point_uid(choices(THREADS="1", MODE="x"), PLATFORM_A) != first
    assert point_uid(choices(THREADS="2", MODE="x"), PLATFORM_B) != first
    newer = choices(THREADS="2", MODE="x")
    newer["deps"]["python"]["version"] = "3.12.1"
    assert point_uid(newer, PLATFORM_A) != first
    assert len(first) == 16 and int(first, 16) >= 0


# -- recording -----------------------------------------------------------------------------------
def test_record_creates_the_entry_and_adds_repetitions_without_overwriting(home_ctx, ckx_home, tmp_path):
    summary = tmp_path / "summary.txt"
    summary.write_text("first\n")
    reps = [Repetition(chars(v), run_dir=f"/runs/{i}", started="2024-01-01T00:00:00+00:00", duration_s=1.5,
                       files=(("summary.txt", summary),)) for i, v in enumerate([10.0, 11.0])]
    first = record_point(home_ctx, name="exp", choices=choices(T="1"), features=PLATFORM_A, repetitions=reps,
                         tags=["t1", "performance-offline"])
    assert first.created_experiment and first.created_point and first.added == (1, 2)
    path = experiment_dir(ckx_home, "exp")
    meta = json.loads((path / "meta.json").read_text())
    assert meta["schema_version"] == 1 and meta["alias"] == "exp" and meta["tags"] == ["t1", "performance-offline"]
    assert meta["points"][0]["uid"] == first.point.uid and meta["points"][0]["repetitions"] == 2
    assert (path / "points" / first.point.uid / "files" / "2" / "summary.txt").read_text() == "first\n"

    summary.write_text("second\n")
    again = record_point(home_ctx, name="exp", choices=choices(T="1"), features=PLATFORM_A,
                         repetitions=[Repetition(chars(13.0), files=(("summary.txt", summary),))], tags=["t2"])
    assert not again.created_experiment and not again.created_point and again.added == (3,)
    assert again.point.uid == first.point.uid
    stored = load_points(path)[first.point.uid]
    assert [r["characteristics"]["metric"]["value"] for r in stored["repetitions"]] == [10.0, 11.0, 13.0]
    assert stored["statistics"]["metric.value"]["median"] == 11.0
    assert stored["statistics"]["metric.value"]["stdev"] == pytest.approx(statistics.stdev([10.0, 11.0, 13.0]))
    assert (path / "points" / first.point.uid / "files" / "1" / "summary.txt").read_text() == "first\n"
    assert (path / "points" / first.point.uid / "files" / "3" / "summary.txt").read_text() == "second\n"
    assert stored["tags"] == ["t1", "performance-offline", "t2"]
    assert stored["features"]["hostname"] == "alpha" and stored["choices"]["env"] == {"T": "1"}

    other = record_point(home_ctx, name="exp", choices=choices(T="2"), features=PLATFORM_A,
                         repetitions=[Repetition(chars(20.0))])
    assert other.created_point and other.point.uid != first.point.uid
    meta = json.loads((path / "meta.json").read_text())
    assert [p["uid"] for p in meta["points"]] == [first.point.uid, other.point.uid]
    assert meta["tags"] == ["t1", "performance-offline", "t2"]


def test_recorded_experiments_are_found_by_the_generic_actions(home_ctx, cli_json, ckx_home):
    record_point(home_ctx, name="found-me", choices=choices(), features=PLATFORM_A,
                 repetitions=[Repetition(chars(1.0))], tags=["special"])
    code, data = cli_json("find", "experiment", "--tags=special")
    assert code == 0 and [Path(e["path"]).name for e in data["entries"]] == ["found-me"]
    code, data = cli_json("load", "experiment:found-me")
    assert code == 0 and data["meta"]["points"][0]["repetitions"] == 1
    code, data = cli_json("list", "experiment")
    assert code == 0 and [e["cid"] for e in data["entries"]] == ["local:experiment:found-me"]


def test_record_into_a_registered_repo_and_refuse_a_ck_format_one(home_ctx, ckx_home, tmp_path, ck_repo_factory):
    add_repo(home_ctx, {"entry": "shared", "path": str(tmp_path / "shared")})
    outcome = record_point(home_ctx, name="exp", repo="shared", choices=choices(), features=PLATFORM_A,
                           repetitions=[Repetition(chars(1.0))])
    assert outcome.experiment.path == (tmp_path / "shared" / "experiments" / "exp").resolve()
    ck_path = ck_repo_factory("ck-old")
    add_repo(home_ctx, {"entry": "ck-old", "path": str(ck_path)})
    with pytest.raises(UsageError, match="CK's format"):
        record_point(home_ctx, name="exp", repo="ck-old", choices=choices(), features=PLATFORM_A,
                     repetitions=[Repetition(chars(1.0))])
    with pytest.raises(UsageError, match="invalid experiment name"):
        record_point(home_ctx, name="../evil", choices=choices(), features=PLATFORM_A, repetitions=[])


WORKER = r'''
import sys
from ckx.store.context import Context
from ckx.runs.experiment import Repetition
from ckx.runs.recording import record_point
ctx = Context(quiet=True, interactive=False)
features = {"hostname": "alpha", "cpu": {"model": "Alpha CPU"}}
for i in range(int(sys.argv[2])):
    value = float(sys.argv[1]) * 100 + i
    record_point(ctx, name="race", choices={"program": "tiny", "cmd_key": "k", "env": {}}, features=features,
                 repetitions=[Repetition({"metric": {"name": "m", "value": value}})])
ctx.close()
'''


def test_concurrent_recorders_lose_no_repetition(ckx_home):
    env = dict(os.environ, PYTHONPATH=str(ROOT), CKX_HOME=str(ckx_home))
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(n), "4"], env=env, stderr=subprocess.PIPE, text=True)
             for n in range(1, 5)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    path = experiment_dir(ckx_home, "race")
    points = load_points(path)
    assert len(points) == 1
    (point,) = points.values()
    values = sorted(r["characteristics"]["metric"]["value"] for r in point["repetitions"])
    assert values == sorted(n * 100.0 + i for n in range(1, 5) for i in range(4))
    assert point["statistics"]["metric.value"]["n"] == 16
    assert json.loads((path / "meta.json").read_text())["points"][0]["repetitions"] == 16


# -- versions and migration ----------------------------------------------------------------------
def test_a_newer_experiment_is_refused_naming_the_file_and_versions(home_ctx, ckx_home, cli):
    record_point(home_ctx, name="future", choices=choices(), features=PLATFORM_A, repetitions=[Repetition(chars(1.0))])
    meta_path = experiment_dir(ckx_home, "future") / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["schema_version"] = 7
    meta_path.write_text(json.dumps(meta))
    proc = cli("show", "experiment:future")
    assert proc.returncode == 1
    assert str(meta_path) in proc.stderr and "schema_version 7" in proc.stderr and "supports (1)" in proc.stderr
    with pytest.raises(MetaError, match="newer"):
        record_point(home_ctx, name="future", choices=choices(), features=PLATFORM_A,
                     repetitions=[Repetition(chars(2.0))])


def test_a_newer_point_file_is_refused_naming_it(home_ctx, ckx_home, cli):
    outcome = record_point(home_ctx, name="future", choices=choices(), features=PLATFORM_A,
                           repetitions=[Repetition(chars(1.0))])
    point_path = outcome.point.path
    data = json.loads(point_path.read_text())
    data["schema_version"] = 2
    point_path.write_text(json.dumps(data))
    proc = cli("export", "experiment:future", "--format=csv")
    assert proc.returncode == 1 and str(point_path) in proc.stderr and "schema_version 2" in proc.stderr


CK_POINT_A = "0123456789abcdef"


def _ck_experiment_files(entry_dir: Path) -> None:
    """A CK-style experiment: pipeline.json, a point with a list of characteristics, a point with a dict."""
    (entry_dir / "pipeline.json").write_text(json.dumps({"data_uoa": "tiny", "cmd_key": "performance-offline"}))
    (entry_dir / f"ckp-{CK_POINT_A}.0001.json").write_text(json.dumps([chars(10.0), chars(14.0)]))
    (entry_dir / f"ckp-{CK_POINT_A}.0002.json").write_text(json.dumps([chars(12.0)]))
    (entry_dir / f"ckp-{CK_POINT_A}.flat.json").write_text(json.dumps({"##characteristics#x#min": 1}))
    (entry_dir / "ckp-oldpoint.0001.json").write_text(json.dumps({
        "choices": {"cmd_key": "accuracy-offline", "env": {"THREADS": 2}, "deps": {"python": "bbbbbbbbbbbbbbbb"}},
        "features": {"platform": {"hostname": "oldbox", "cpu": {"model": "Old CPU"}}},
        "characteristics_list": [{"metric": {"name": "top1", "value": 76.0, "unit": "%"}, "accuracy": {"top1": 76.0}}],
    }))


def test_a_ck_style_experiment_is_read_through_the_v0_migration(home_ctx, ck_repo_factory, cli_json, cli):
    repo = ck_repo_factory("ck-exps", {"experiment": [("old-exp", "feedfacefeedface", {"tags": ["mlperf", "old"]})]})
    _ck_experiment_files(repo / "experiment" / "old-exp")
    add_repo(home_ctx, {"entry": "ck-exps", "path": str(repo)})
    code, data = cli_json("show", "experiment:old-exp")
    assert code == 0, data
    (exp,) = data["experiments"]
    assert exp["migrated_from"] == 0 and exp["tags"] == ["mlperf", "old"]
    by_uid = {p["uid"]: p for p in exp["points"]}
    assert by_uid[CK_POINT_A]["repetitions"] == 3
    assert by_uid[CK_POINT_A]["metric_statistics"]["values"] == [10.0, 14.0, 12.0]
    assert by_uid[CK_POINT_A]["choices"]["cmd_key"] == "performance-offline"
    assert by_uid[CK_POINT_A]["choices"]["program"] == "tiny"
    (old,) = [p for p in exp["points"] if p["uid"] != CK_POINT_A]
    assert old["choices"]["env"] == {"THREADS": "2"}
    assert old["choices"]["deps"]["python"]["env_uid"] == "bbbbbbbbbbbbbbbb"
    assert old["platform"]["hostname"] == "oldbox" and old["metric"]["name"] == "top1"
    text = cli("show", "experiment:old-exp").stdout
    assert "schema_version 0" in text and "12.000 ± 2.000 samples/s" in text
    # nothing was written into the read-only CK repo
    assert not (repo / "experiment" / "old-exp" / "points").exists()


def test_recording_into_a_native_v0_experiment_migrates_it_on_disk(home_ctx, ckx_home):
    entry = experiment_dir(ckx_home, "legacy")
    entry.mkdir(parents=True)
    (entry / "meta.json").write_text(json.dumps({"uid": "1111111111111111", "alias": "legacy", "tags": ["old"],
                                                 "schema_version": 0}))
    _ck_experiment_files(entry)
    home_ctx.index.refresh(["experiment"], force=True)
    before = read_experiment(entry, entry / "meta.json")
    assert before.migrated_from == 0 and len(before.points) == 2
    outcome = record_point(home_ctx, name="legacy", choices=choices(), features=PLATFORM_A,
                           repetitions=[Repetition(chars(5.0))], tags=["new"])
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["schema_version"] == 1 and meta["uid"] == "1111111111111111" and meta["tags"] == ["old", "new"]
    assert "migrated_from" not in meta
    points = load_points(entry)
    assert set(points) == {CK_POINT_A, outcome.point.uid, before.points[1].uid}
    assert len(points[CK_POINT_A]["repetitions"]) == 3
    after = read_experiment(entry, entry / "meta.json")
    assert after.migrated_from is None and len(after.points) == 3


# -- show and export -----------------------------------------------------------------------------
@pytest.fixture
def two_machines(home_ctx):
    """One experiment with two points on alpha (3 and 2 repetitions) and one on beta (1 repetition)."""
    record_point(home_ctx, name="multi", choices=choices(THREADS="1"), features=PLATFORM_A,
                 repetitions=[Repetition(chars(v), run_dir=f"/r/{v}", started="s", duration_s=2.0)
                              for v in (10.0, 12.0, 14.0)], tags=["onnx"])
    record_point(home_ctx, name="multi", choices=choices(THREADS="2"), features=PLATFORM_A,
                 repetitions=[Repetition(chars(v)) for v in (20.0, 22.0)], tags=["onnx"])
    record_point(home_ctx, name="multi", choices=choices(THREADS="1"), features=PLATFORM_B,
                 repetitions=[Repetition(chars(30.0, note="a,b"))], tags=["arm"])


def test_show_prints_a_table_of_points(two_machines, cli, cli_json):
    proc = cli("show", "experiment:multi")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("point"))
    for column in ("program", "cmd_key", "env", "platform", "reps", "metric", "median ± stdev"):
        assert column in header
    rows = [line for line in lines if "THREADS=" in line]
    assert len(rows) == 3
    assert any("alpha (Alpha CPU)" in r and "12.000 ± 2.000 samples/s" in r for r in rows)
    assert any("beta (Beta CPU)" in r and "30.000 ± 0 samples/s" in r for r in rows)
    code, data = cli_json("show", "experiment:multi")
    assert [p["repetitions"] for p in data["experiments"][0]["points"]] == [3, 2, 1]


def test_the_python_api_names_experiments_by_entry(two_machines, home_ctx):
    from ckx.api import access

    record_point(home_ctx, name="another", choices=choices(), features=PLATFORM_A, repetitions=[Repetition(chars(1.0))])
    result = access({"action": "show", "module": "experiment", "entry": "multi"}, context=home_ctx)
    assert result["return"] == 0 and [e["cid"] for e in result["experiments"]] == ["local:experiment:multi"]
    result = access({"action": "show", "module": "experiment"}, context=home_ctx)
    assert sorted(e["cid"] for e in result["experiments"]) == ["local:experiment:another", "local:experiment:multi"]
    result = access({"action": "export", "module": "experiment", "entry": "another", "format": "csv"},
                    context=home_ctx)
    assert result["return"] == 0 and result["rows"] == 1
    result = access({"action": "export", "module": "experiment", "entry": "nothing"}, context=home_ctx)
    assert result["return"] == 3


def test_show_of_a_missing_experiment_is_not_found(cli):
    proc = cli("show", "experiment:nope")
    assert proc.returncode == 3 and "no entry experiment:nope" in proc.stderr


def test_csv_export_has_one_row_per_repetition(two_machines, cli, tmp_path):
    proc = cli("export", "experiment:multi", "--format=csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 6
    assert [(r["choices.env.THREADS"], r["platform.hostname"], r["repetition"]) for r in rows] == [
        ("1", "alpha", "1"), ("1", "alpha", "2"), ("1", "alpha", "3"), ("2", "alpha", "1"), ("2", "alpha", "2"),
        ("1", "beta", "1")]
    assert [float(r["metrics.metric.value"]) for r in rows] == [10.0, 12.0, 14.0, 20.0, 22.0, 30.0]
    assert rows[0]["choices.cmd_key"] == "performance-offline" and rows[0]["choices.deps.python.version"] == "3.11.7"
    assert rows[0]["metrics.valid"] == "true" and rows[0]["duration_s"] == "2.0" and rows[3]["duration_s"] == ""
    assert rows[5]["metrics.note"] == "a,b"
    assert len({r["point"] for r in rows}) == 3
    out = tmp_path / "out.csv"
    proc = cli("export", "experiment:multi", "--format=csv", f"--out={out}")
    assert proc.returncode == 0 and f"wrote {out}" in proc.stdout
    assert len(list(csv.DictReader(out.open()))) == 6


def test_json_export_holds_every_point(two_machines, cli):
    proc = cli("export", "experiment:multi", "--format=json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    (exp,) = document["experiments"]
    assert exp["cid"] == "local:experiment:multi"
    assert sorted(len(p["repetitions"]) for p in exp["points"]) == [1, 2, 3]
    assert {p["platform"]["hostname"] for p in exp["points"]} == {"alpha", "beta"}


def test_export_refuses_an_unknown_format_and_a_directory(two_machines, cli, tmp_path):
    proc = cli("export", "experiment:multi", "--format=xml")
    assert proc.returncode == 2 and "csv or json" in proc.stderr
    proc = cli("export", "experiment:multi", f"--out={tmp_path}")
    assert proc.returncode == 2 and "is a directory" in proc.stderr


def test_export_rows_of_nothing_and_csv_cells():
    columns, rows = export_rows([])
    assert rows == [] and columns[:3] == ["experiment", "point", "repetition"]
    text = to_csv(["a", "b"], [{"a": None, "b": True}, {"a": 1.5}])
    assert list(csv.reader(io.StringIO(text))) == [["a", "b"], ["", "true"], ["1.5", ""]]


# -- benchmark through the CLI with a tiny program -----------------------------------------------
def _points_by_env(path: Path) -> dict[str, dict]:
    return {json.dumps(p["choices"]["env"], sort_keys=True): p for p in load_points(path).values()}


def test_benchmark_records_points_and_statistics(tiny, cli, cli_json, ckx_home):
    proc = cli("benchmark", "program:tiny", "--cmd_key=performance-offline", "--repetitions=3", "--record",
               "--record_uoa=tiny-exp", "--tags=first,tiny-test", "--print_files=summary.txt")
    assert proc.returncode == 0, proc.stderr
    assert "repetition 3/3: samples_per_second = 103.000 samples/s (valid)" in proc.stdout
    assert "tiny run 2: 102.0" in proc.stdout  # the print_files
    assert "characteristic" in proc.stdout and "metric.value" in proc.stdout  # the statistics table
    path = experiment_dir(ckx_home, "tiny-exp")
    points = load_points(path)
    assert len(points) == 1
    (point,) = points.values()
    assert len(point["repetitions"]) == 3
    values = [101.0, 102.0, 103.0]
    stats = point["statistics"]["metric.value"]
    assert stats["values"] == values and stats["mean"] == pytest.approx(statistics.mean(values))
    assert stats["median"] == statistics.median(values) and stats["stdev"] == pytest.approx(statistics.stdev(values))
    assert stats["range_pct"] == pytest.approx(100 * 2 / 102)
    p99 = point["statistics"]["latency_ms.p99"]
    assert p99["min"] == pytest.approx(1200 / 103) and p99["max"] == pytest.approx(1200 / 101)
    assert "loadgen.min_duration_ms" not in point["statistics"] and "run.duration_s" in point["statistics"]
    assert "run" not in point["repetitions"][0]["characteristics"]
    assert point["choices"]["cmd_key"] == "performance-offline" and point["choices"]["program"] == "tiny"
    assert point["features"]["hostname"] and point["features"]["cpu"]["model"]
    for number in (1, 2, 3):
        kept = path / "points" / point["uid"] / "files" / str(number) / "summary.txt"
        assert kept.read_text() == f"tiny run {number}: {100 + number}.0\n"
    assert point["tags"] == ["first", "tiny-test", "performance-offline"]
    meta = json.loads((path / "meta.json").read_text())
    assert meta["tags"] == ["first", "tiny-test", "performance-offline"]

    code, data = cli_json("benchmark", "program:tiny", "--cmd_key=performance-offline", "--repetitions=2",
                          "--record", "--record_uoa=tiny-exp", "--env.TINY_BASE=200", "--skip_print_stats")
    assert code == 0 and data["created_point"] is True and data["added_repetitions"] == [1, 2]
    by_env = _points_by_env(path)
    assert set(by_env) == {"{}", '{"TINY_BASE": "200"}'}
    assert by_env['{"TINY_BASE": "200"}']["statistics"]["metric.value"]["values"] == [204.0, 205.0]

    # the same choices again add repetitions to the first point; nothing is overwritten
    code, data = cli_json("benchmark", "program:tiny", "--cmd_key=performance-offline", "--record",
                          "--record_uoa=tiny-exp")
    assert code == 0 and data["created_point"] is False and data["added_repetitions"] == [4]
    first = _points_by_env(path)["{}"]
    assert first["statistics"]["metric.value"]["values"] == [101.0, 102.0, 103.0, 106.0]

    # replay a point: the recorded choices come back
    target = by_env['{"TINY_BASE": "200"}']["uid"]
    code, data = cli_json("replay", "experiment:tiny-exp", f"--point={target[:8]}")
    assert code == 0, data
    assert data["point"] == target and data["choices"]["env"] == {"TINY_BASE": "200"}
    assert data["choices"]["cmd_key"] == "performance-offline" and data["choices"]["program"] == "tiny"
    assert data["repetitions"][0]["characteristics"]["metric"]["value"] == 207.0
    assert len(load_points(path)) == 2  # replay without --record records nothing

    # replay without --point when there are two: a clear error listing them
    proc = cli("replay", "experiment:tiny-exp")
    assert proc.returncode == 3 and "--point=UID" in proc.stderr and target in proc.stderr

    proc = cli("export", "experiment:tiny-exp", "--format=csv")
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 6
    assert sorted(float(r["metrics.metric.value"]) for r in rows) == [101.0, 102.0, 103.0, 106.0, 204.0, 205.0]


def test_benchmark_without_record_writes_no_experiment(tiny, cli_json, ckx_home):
    code, data = cli_json("benchmark", "program:tiny", "--cmd_key=performance-offline", "--repetitions=2")
    assert code == 0 and "experiment" not in data
    assert [r["characteristics"]["metric"]["value"] for r in data["repetitions"]] == [101.0, 102.0]
    assert data["statistics"]["metric.value"]["mean"] == 101.5
    assert not (ckx_home / "repos" / "local" / "experiments").exists()


def test_a_failing_repetition_stops_the_benchmark_and_keeps_the_earlier_ones(tiny, cli, ckx_home):
    proc = cli("benchmark", "program:tiny", "--cmd_key=performance-offline", "--repetitions=3", "--record",
               "--record_uoa=broken", env={"TINY_FAIL_AT": "2"})
    assert proc.returncode == 6
    assert "exited with code 3" in proc.stderr and "1 earlier repetition(s) were recorded" in proc.stderr
    (point,) = load_points(experiment_dir(ckx_home, "broken")).values()
    assert len(point["repetitions"]) == 1


def test_replay_says_which_recorded_dependencies_are_gone(tiny, home_ctx, cli_json):
    recorded = choices(TINY_BASE="50")
    recorded["deps"]["python"]["env_uid"] = "cccccccccccccccc"
    recorded["extra_args"] = ["--flag"]
    record_point(home_ctx, name="gone", choices=recorded, features=PLATFORM_B, repetitions=[Repetition(chars(1.0))])
    code, data = cli_json("replay", "experiment:gone")
    assert code == 0, data
    assert data["missing_deps"] == [{"name": "python", "env_uid": "cccccccccccccccc", "version": "3.11.7",
                                     "soft": "compiler.python"}]
    assert data["choices"]["env"] == {"TINY_BASE": "50"} and data["choices"]["extra_args"] == ["--flag"]
    assert data["repetitions"][0]["characteristics"]["argv"] == ["--flag"]
    assert data["repetitions"][0]["characteristics"]["metric"]["value"] == 51.0


def test_record_options_without_record_are_a_warning(tiny, cli, ckx_home):
    proc = cli("benchmark", "program:tiny", "--cmd_key=performance-offline", "--record_uoa=x")
    assert proc.returncode == 0 and "no effect without --record" in proc.stderr
    assert not experiment_dir(ckx_home, "x").exists()


@pytest.mark.parametrize("args, code, message", [
    (["benchmark", "program:tiny"], 2, "--cmd_key"),
    (["benchmark", "program:tiny", "--cmd_key=performance-offline", "--repetitions=0"], 2, "--repetitions"),
    (["benchmark", "program:tiny", "--cmd_key=performance-offline", "--repetitions=x"], 2, "--repetitions"),
    (["benchmark", "program:tiny", "--cmd_key=performance-offline", "--record", "--record_repo=nowhere"], 3,
     "not registered"),
    (["benchmark", "program:tiny", "--cmd_key=performance-offline", "--record", "--record_uoa=../x"], 2,
     "invalid experiment name"),
    (["benchmark", "program:tiny", "--cmd_key=performance-offline", "--record=maybe"], 2, "--record"),
    (["benchmark", "program:nothing", "--cmd_key=x"], 3, "no entry"),
    (["replay", "experiment:nothing"], 3, "no entry"),
])
def test_benchmark_and_replay_usage_errors(tiny, cli, args, code, message):
    proc = cli(*args)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert message in proc.stderr


# -- the real MLPerf program, null backend -------------------------------------------------------
@pytest.mark.slow
def test_benchmark_the_mlperf_program_with_the_null_backend(cli, cli_json, ckx_home, tmp_path):
    common = ["benchmark", "program:image-classification-onnx-cpu", "--cmd_key=performance-offline",
              "--env.MLPERF_BACKEND=null", "--offline", "--record", "--record_uoa=mlperf-null",
              "--tags=null-backend", "--print_files=mlperf_log_summary.txt", "--skip_print_timers"]
    short = ["--", "--count", "6", "--time", "1"]
    proc = cli(*common, "--repetitions=3", *short, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Result is" in proc.stdout  # the summary file was printed
    path = experiment_dir(ckx_home, "mlperf-null")
    (point,) = load_points(path).values()
    assert len(point["repetitions"]) == 3
    values = [r["characteristics"]["metric"]["value"] for r in point["repetitions"]]
    assert all(isinstance(v, float) and v > 0 for v in values)
    stats = point["statistics"]["metric.value"]
    assert stats["median"] == pytest.approx(statistics.median(values))
    assert stats["stdev"] == pytest.approx(statistics.stdev(values))
    assert stats["min"] == min(values) and stats["max"] == max(values)
    assert point["metric"]["name"] == "samples_per_second" and point["metric"]["scenario"] == "Offline"
    assert point["choices"]["env"] == {"MLPERF_BACKEND": "null"}
    assert point["choices"]["extra_args"] == ["--count", "6", "--time", "1"]
    assert "python" in point["choices"]["deps"]
    kept = path / "points" / point["uid"] / "files" / "3" / "mlperf_log_summary.txt"
    assert "Samples per second" in kept.read_text()

    proc = cli(*common, "--repetitions=1", "--env.MLPERF_THREADS=1", *short, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    points = load_points(path)
    assert len(points) == 2
    assert sorted(len(p["repetitions"]) for p in points.values()) == [1, 3]

    code, data = cli_json("replay", "experiment:mlperf-null", f"--point={point['uid']}", timeout=600)
    assert code == 0, data
    assert data["choices"]["env"] == point["choices"]["env"]
    assert data["choices"]["extra_args"] == point["choices"]["extra_args"]
    assert {k: v["env_uid"] for k, v in data["choices"]["deps"].items()} == \
        {k: v["env_uid"] for k, v in point["choices"]["deps"].items()}
    assert data["missing_deps"] == []

    proc = cli("export", "experiment:mlperf-null", "--format=csv")
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 4
    assert all(not math.isnan(float(r["metrics.metric.value"])) for r in rows)
    assert {r["choices.env.MLPERF_THREADS"] for r in rows} == {"", "1"}


def test_a_point_states_the_mlperf_rules_its_metric_follows(home_ctx, ckx_home):
    rules = {"version": "v6.1", "loadgen_version": "6.0.17", "conf": "LoadGen built-in mlperf.conf",
             "conf_sha1": "68cdba8667e971c3ae8f1617ba67fa56d01065b4"}
    outcome = record_point(home_ctx, name="rules", choices=choices(), features=PLATFORM_A,
                           repetitions=[Repetition(chars(10.0, mlperf_rules=rules))])
    stored = load_points(experiment_dir(ckx_home, "rules"))[outcome.point.uid]
    assert stored["metric"]["mlperf_rules"] == rules
    plain = record_point(home_ctx, name="plain", choices=choices(), features=PLATFORM_A,
                         repetitions=[Repetition(chars(10.0))])
    assert "mlperf_rules" not in load_points(experiment_dir(ckx_home, "plain"))[plain.point.uid]["metric"]
