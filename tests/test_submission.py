"""MLPerf submission trees from short ckx runs, judged by the official tools (checker, accuracy script, compliance)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ckx.core.errors import IntegrityError
from ckx.runs.submission import Run, collect_runs, single_label_map

ROOT = Path(__file__).resolve().parent.parent
OFFICIAL = ROOT.parent / "shared" / "third_party" / "mlperf-inference"
ONNX = "program:image-classification-onnx-cpu"
SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
SYSTEM = {"system": {"submitter": "ckx-test", "status": "available", "system_id": "ckx_cpu",
                     "host_storage_capacity": "100 GB", "host_storage_type": "SSD",
                     "host_memory_configuration": "not given", "host_networking": "N/A",
                     "host_network_card_count": "0", "host_networking_topology": "N/A", "cooling": "air"}}
# What a tree of short runs on six images cannot meet, by the checker's own words; anything else is a defect.
SHORT_RUN_ERRORS = {
    "performance sample count": re.compile(r"performance_sample_count, found \d+, needs to be >= 1024"),
    "min duration": re.compile(r"Test duration less than 600s in user config"),
    "offline samples per query": re.compile(r"Required minimum samples per query not met by user config, Expected=24576"),
    "early stopping": re.compile(r"^Early stopping condition was not met"),
    "dataset size": re.compile(r"accurcy run does not cover all dataset, accuracy samples: 6, dataset size: 50000"),
    # short MultiStream and Server runs are LoadGen-INVALID (early stopping), so their compliance performance check fails
    "compliance performance": re.compile(r"^Compliance test performance check in \S+/(MultiStream|Server)/TEST0[14] failed"),
    "summary of the above": re.compile(r"^(Some (performance|accuracy|compliance) checks? Checks failed for|NoResults |"
                                       r"SUMMARY: submission has errors)"),
}

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (OFFICIAL / "compliance").is_dir(),
                                                   reason="the official MLPerf tools are not next to the project")]


def ckx(home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update({"CKX_HOME": str(home), "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))})
    for name in ("CKX_TOOLS", "CKX_URL_MAP", "CKX_OFFLINE", "CKX_DEBUG", "EXTRA_OPS", "CKX_BUILTIN_REPO",
                 "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "ckx", *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=timeout, cwd=home)


def ckx_json(home: Path, *args: str) -> dict:
    proc = ckx(home, *args, "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("submission-home")
    proc = ckx(home, "install", "package", "--tags=mlperf,inference,src", f"--local_path={OFFICIAL}")
    assert proc.returncode == 0, proc.stderr
    return home


@pytest.fixture(scope="module")
def tree(home) -> tuple[Path, dict]:
    """A tree of short runs of all four scenarios: synthetic ResNet50, the embedded photos, TEST01 and TEST04."""
    (home / "system.json").write_text(json.dumps(SYSTEM))
    out = home / "submission"
    data = ckx_json(home, "generate", "submission", "--run", "--short", "--compliance_retries=3", f"--out={out}",
                    "--system_type=datacenter,edge",
                    "--offline", "--dep_add_tags.model=synthetic", f"@{home / 'system.json'}")
    return out, data


def scenario_dir(out: Path, scenario: str) -> Path:
    return out / "closed" / "ckx-test" / "results" / "ckx_cpu" / "resnet50" / scenario


def test_the_checker_reports_only_what_short_runs_cannot_meet(home, tree):
    out, _ = tree
    verdict = ckx_json(home, "check", "submission", f"--dir={out}", "--version=v6.1")
    errors = [m for m in verdict["messages"] if m["level"] == "ERROR"]
    unexplained = [m for m in errors if not any(p.search(m["text"]) for p in SHORT_RUN_ERRORS.values())]
    assert not unexplained, unexplained
    seen = {name for name, pattern in SHORT_RUN_ERRORS.items() if any(pattern.search(m["text"]) for m in errors)}
    assert seen == set(SHORT_RUN_ERRORS)
    # the structure, system and measurement checks pass for every scenario
    assert not [m for m in errors if m["check"] in ("structure_check", "system_check", "measurements_checks", "loader")]
    assert verdict["passed"] is False and verdict["returncode"] == 1
    text = ckx(home, "check", "submission", f"--dir={out}").stdout
    assert "performance_check" in text and "FAILED with" in text


def test_the_tree_has_the_layout_and_the_official_truncation(tree):
    out, data = tree
    root = out / "closed" / "ckx-test"
    system = json.loads((root / "systems" / "ckx_cpu.json").read_text())
    assert len(system) == 35 and system["accelerators_per_node"] == "0" and system["system_type"] == "datacenter,edge"
    assert (root / "src" / "image-classification-base" / "harness" / "cli.py").is_file()
    for scenario in SCENARIOS:
        directory = scenario_dir(out, scenario)
        for name in ("performance/run_1/mlperf_log_detail.txt", "accuracy/mlperf_log_accuracy.json", "user.conf",
                     "README.md", "measurements.json", "TEST01/verify_accuracy.txt", "TEST04/verify_performance.txt"):
            assert (directory / name).is_file(), (scenario, name)
        full_log = Path(data["full_logs"]) / directory.relative_to(out) / "accuracy" / "mlperf_log_accuracy.json"
        digest = hashlib.sha256(full_log.read_bytes()).hexdigest()
        assert f"hash={digest}" in (directory / "accuracy" / "accuracy.txt").read_text()


def test_official_accuracy_line_equals_ckx_line_on_every_exported_log(tree):
    out, data = tree
    rows = {row["scenario"]: row for row in data["rows"]}
    script = OFFICIAL / "vision" / "classification_and_detection" / "tools" / "accuracy-imagenet.py"
    for scenario in SCENARIOS:
        result = json.loads((Path(rows[scenario]["accuracy_run"]) / "result.json").read_text())
        ours = result["accuracy"]["single_label"]
        full_log = Path(data["full_logs"]) / scenario_dir(out, scenario).relative_to(out) / "accuracy"
        proc = subprocess.run([sys.executable, str(script), "--mlperf-accuracy-file",
                               str(full_log / "mlperf_log_accuracy.json"), "--imagenet-val-file", ours["val_map"],
                               "--dtype", "float32"], capture_output=True, text=True, timeout=120)
        assert proc.stdout.strip().splitlines()[-1] == ours["line"], proc.stdout + proc.stderr
        exported = (scenario_dir(out, scenario) / "accuracy" / "accuracy.txt").read_text().splitlines()[0]
        assert exported == ours["line"] and ours["total"] == 6


# Short runs LoadGen can call VALID: SingleStream's p90 early-stopping estimate over 256 queries (about 17 s
# here); MultiStream's p99 needs 662 queries of 8 samples and Server's p99 thousands, so their
# short runs stay INVALID and the official performance check refuses them for that reason alone.
SHORT_VALID = ("SingleStream", "Offline")


def test_compliance_verification_is_the_official_one_and_recorded(tree):
    out, data = tree
    for scenario in SCENARIOS:
        directory = scenario_dir(out, scenario)
        row = next(r for r in data["rows"] if r["scenario"] == scenario)
        # TEST01: the audit run's sampled responses equal the accuracy run's
        assert "TEST PASS" in (directory / "TEST01" / "verify_accuracy.txt").read_text()
        for test in ("TEST01", "TEST04"):
            # the official performance half runs to a verdict (TEST01's reader is reached by its old name)
            performance = (directory / test / "verify_performance.txt").read_text()
            assert "No module named" not in performance
            if scenario in SHORT_VALID:
                assert "TEST PASS" in performance, (scenario, test, performance)
                assert row[test] == "pass", (scenario, test)
            else:
                assert re.search(r"TEST FAIL: (Reference results are invalid|Invalid results in)", performance), \
                    (scenario, test, performance)
                assert row[test] == "fail"


def test_refuses_accuracy_the_official_script_cannot_read(tmp_path):
    val_map = tmp_path / "val_map.txt"
    val_map.write_text("chelsea.png 281,282,285\n")
    run = Run(tmp_path, {"mode": "accuracy", "dataset": {"list": str(val_map), "single_label_list": None}}, "0")
    with pytest.raises(IntegrityError, match=r"val_map.txt line 1: label '281,282,285'"):
        single_label_map(run)


def test_compliance_runs_are_marked_and_give_their_references(tree):
    _, data = tree
    test01 = Path(next(r for r in data["rows"] if r["scenario"] == "Offline")["performance_run"]).parent.parent.parent
    result = json.loads((test01 / "result.json").read_text())
    assert result["audit"]["test"] == "TEST01" and (test01 / "audit.config").is_file()
    assert (test01 / "audit.config").read_bytes() == (OFFICIAL / "compliance" / "TEST01" / "resnet50" / "audit.config").read_bytes()
    assert result["compliance"]["test"] == "TEST01" and "TEST01 verification complete" in result["compliance"]["output"]
    assert any("audit run" in reason for reason in result["invalid_reasons"])
    runs = collect_runs([test01])
    assert runs["Offline"].performance.path == test01 / "reference" / "performance" / "run_1"
    assert runs["Offline"].accuracy.path == test01 / "reference" / "accuracy"


def test_time_10_ends_offline_within_25_s_after_find_performance(home):
    found = ckx_json(home, "run", ONNX, "--cmd_key=find-performance", "--offline", "--dep_add_tags.model=synthetic",
                     "--env.EXTRA_OPS=--time 3")["result"]
    assert found["mode"] == "find-performance" and found["found"]["offline_qps"] > 0
    conf = Path(found["found_conf"]).read_text()
    assert re.search(r"^\*\.Offline\.target_qps = [\d.]+$", conf, re.MULTILINE)
    started = time.monotonic()
    proc = ckx(home, "run", ONNX, "--cmd_key=performance-offline", "--offline", "--dep_add_tags.model=synthetic",
               "--env.EXTRA_OPS=--time 10")
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert elapsed < 25, f"--time 10 took {elapsed:.1f} s"
    assert re.search(r"^expected duration: about \d+ s \(Offline performance\)", proc.stdout, re.MULTILINE)
    run_dir = Path(re.search(r"^run directory: (.+) \(", proc.stdout, re.MULTILINE).group(1))
    result = json.loads((run_dir / "result.json").read_text())
    assert result["user_confs"][-1] == found["found_conf"]  # the measured QPS sized the run
    assert result["loadgen"]["samples_per_query"] < 24576


def test_a_tree_from_a_recorded_experiment_uses_its_runs(home, tree, monkeypatch):
    from ckx.store.context import Context
    from ckx.runs.experiment import Repetition
    from ckx.runs.recording import record_point

    _, data = tree
    compliance_dirs = {Path(r["performance_run"]).parent.parent.parent for r in data["rows"]}
    monkeypatch.setenv("CKX_HOME", str(home))
    ctx = Context(quiet=True)
    try:
        for index, run_dir in enumerate(sorted(compliance_dirs | {Path(p) for p in _test04_dirs(home)})):
            result = json.loads((run_dir / "result.json").read_text())
            record_point(ctx, name="mlperf-short", choices={"program": "image-classification-onnx-cpu",
                                                            "cmd_key": result["run"]["cmd_key"], "n": index},
                         features={"hostname": "h"}, repetitions=[Repetition(result, run_dir=str(run_dir))])
    finally:
        ctx.close()
    out = home / "from-experiment"
    again = ckx_json(home, "generate", "submission", "--experiment=mlperf-short", f"--out={out}",
                     "--system_type=datacenter,edge", f"@{home / 'system.json'}")
    assert {r["scenario"]: r["performance_run"] for r in again["rows"]} == \
        {r["scenario"]: r["performance_run"] for r in data["rows"]}
    assert (scenario_dir(out, "Server") / "TEST04" / "verify_performance.txt").is_file()


def _test04_dirs(home: Path) -> list[str]:
    runs = home / "runs" / "image-classification-onnx-cpu"
    return [str(d) for d in runs.iterdir()
            if (d / "result.json").is_file() and (json.loads((d / "result.json").read_text()).get("audit") or {}).get("test") == "TEST04"]


# MultiStream and Server verified where LoadGen can call them VALID: enough queries for early stopping
# (MultiStream 662 at least, 1,000 here so its p99 estimate is not the slowest query; Server about 460).
# EfficientNet-Lite0 (the --offline default) runs a MultiStream query in ~65 ms here, ResNet50 in ~430 ms.
# Server's 15 ms bound is out of two cores' reach for either model under Server's arrivals, so the Server
# runs ask for 250 ms at 15 QPS (each run then names it as a reason it is no submission). The p99 of MultiStream
# on a shared machine moves by 10-30% from run to run (TEST01 allows 10%): the retries absorb that.
# Several minutes: left out of the default run, run with `python -m pytest -m long`.
LONG_OPS = {"MultiStream": "--time 1 --count 1000",
            "Server": "--time 1 --count 600 --qps 15 --max-latency 0.25"}


@pytest.mark.long
@pytest.mark.parametrize("scenario", sorted(LONG_OPS))
def test_multistream_and_server_verify_when_loadgen_calls_them_valid(home, scenario):
    out = home / f"valid-{scenario}"
    data = ckx_json(home, "generate", "submission", "--run", f"--scenarios={scenario}", f"--out={out}",
                    "--compliance_retries=2", "--offline", f"--env.EXTRA_OPS={LONG_OPS[scenario]}",
                    f"--system.submitter={SYSTEM['system']['submitter']}",
                    f"--system.system_id={SYSTEM['system']['system_id']}")
    row = next(r for r in data["rows"] if r["scenario"] == scenario)
    assert row["valid"], row
    assert (row["TEST01"], row["TEST04"]) == ("pass", "pass"), row
    directory = scenario_dir(out, scenario)
    for test in ("TEST01", "TEST04"):
        performance = (directory / test / "verify_performance.txt").read_text()
        assert "TEST PASS" in performance and "TEST FAIL" not in performance, (test, performance)
    assert "TEST PASS" in (directory / "TEST01" / "verify_accuracy.txt").read_text()
    result = json.loads((Path(row["performance_run"]) / "result.json").read_text())
    given = int(re.search(r"--count (\d+)", LONG_OPS[scenario]).group(1))
    assert result["valid"] and result["query_count"] >= given
    if scenario == "Server":
        assert "target latency 250 ms is above the rules' 15 ms" in result["invalid_reasons"]
