"""The dashboard of a sweep: a plot per swept parameter, the machine-by-configuration table, machine filters."""
from __future__ import annotations

from pathlib import Path

import pytest

from ckx.core.home import Home
from ckx.runs.dashboard import dashboard_data
from ckx.runs.experiment import Repetition, read_experiment
from ckx.runs.recording import record_point
from ckx.store.context import Context
from test_dashboard import PLATFORM_A, PLATFORM_B, browser, perf  # noqa: F401  (browser: the Chromium fixture)

THREADS = ("1", "2", "4")
BATCHES = ("8", "32")


def sweep_choices(threads: str, batch: str) -> dict:
    return {"program": "image-classification-onnx-cpu", "cmd_key": "performance-offline",
            "env": {"MLPERF_BACKEND": "null", "MLPERF_THREADS": threads, "MLPERF_MAX_BATCHSIZE": batch},
            "dep_add_tags": {}, "deps": {}}


@pytest.fixture
def sweep(ckx_home) -> dict:
    """Experiment 'grid': alpha ran 3 threads x 2 batches (6 points), beta 2 x 2 (4 points) and one failure."""
    ctx = Context(Home(ckx_home), quiet=True, interactive=False)
    try:
        for platform, threads in ((PLATFORM_A, THREADS), (PLATFORM_B, THREADS[:2])):
            for t in threads:
                for b in BATCHES:
                    value = 100.0 * int(t) + int(b) + (0 if platform is PLATFORM_A else 1000)
                    record_point(ctx, name="grid", choices=sweep_choices(t, b), features=platform,
                                 repetitions=[Repetition(perf(value), duration_s=1.0),
                                              Repetition(perf(value + 2), duration_s=1.0)],
                                 sweep={"params": {"env.MLPERF_THREADS": t, "env.MLPERF_MAX_BATCHSIZE": b}},
                                 node=platform["hostname"], tags=["performance-offline"])
        record_point(ctx, name="grid", choices=sweep_choices("4", "8"), features=PLATFORM_B, repetitions=[],
                     sweep={"params": {"env.MLPERF_THREADS": "4", "env.MLPERF_MAX_BATCHSIZE": "8"}}, node="beta",
                     failure={"message": "exited with code 2", "log_tail": "out of memory", "node": "beta"})
    finally:
        ctx.close()
    return {"alpha": 6, "beta": 4, "failed": 1}


def test_the_data_of_a_sweep_carries_its_parameters_and_failures(sweep, ckx_home):
    path = ckx_home / "repos" / "local" / "experiments" / "grid"
    data = dashboard_data([read_experiment(path, path / "meta.json")])
    assert len(data["points"]) == 11 and len(data["machines"]) == 2
    failed = [p for p in data["points"] if p["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["stats"] is None and failed[0]["n"] == 0
    assert failed[0]["sweep"] == {"env.MLPERF_THREADS": "4", "env.MLPERF_MAX_BATCHSIZE": "8"}
    assert {p["node"] for p in data["points"]} == {"alpha", "beta"}


@pytest.mark.browser
@pytest.mark.slow
def test_the_sweep_dashboard_in_headless_chromium(sweep, cli, tmp_path, browser):  # noqa: F811
    from selenium.webdriver.support.ui import WebDriverWait

    out = tmp_path / "sweep.html"
    proc = cli("dashboard", "experiment:grid", f"--out={out}")
    assert proc.returncode == 0, proc.stderr
    browser.get(out.as_uri())
    WebDriverWait(browser, 10).until(lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "true")

    def marks(param: str) -> list:
        return browser.find_elements("css selector", f'svg[data-plot="sweep"][data-param="{param}"] '
                                                     'circle[data-kind="sweep-point"]')

    def plots() -> list[str]:
        return [e.get_attribute("data-param") for e in browser.find_elements("css selector", 'svg[data-plot="sweep"]')]

    measured = sweep["alpha"] + sweep["beta"]
    assert sorted(plots()) == ["env.MLPERF_MAX_BATCHSIZE", "env.MLPERF_THREADS"]
    # one mark per point that has a metric, in the plot of each swept parameter
    for param in ("env.MLPERF_THREADS", "env.MLPERF_MAX_BATCHSIZE"):
        found = marks(param)
        assert len(found) == measured
        assert len({m.get_attribute("data-point") for m in found}) == measured
    # one line per setting of the other parameter and machine: batch 8/32 on alpha and on beta
    assert len(browser.find_elements("css selector", 'svg[data-param="env.MLPERF_THREADS"] g[data-line]')) == 4

    table = browser.find_element("css selector", 'table[data-table="machines"]')
    assert [th.text for th in table.find_elements("css selector", "thead th")] == [
        "configuration", "alpha (Alpha CPU)", "beta (Beta CPU)"]
    rows = table.find_elements("css selector", "tbody tr")
    assert len(rows) == 6
    cells = {row.find_element("css selector", "td").text: [td.text for td in row.find_elements("css selector", "td")[1:]]
             for row in rows}
    assert cells["env.MLPERF_MAX_BATCHSIZE=8 env.MLPERF_THREADS=4"] == ["409.000 ± 1.414 samples/s", "failed"]
    assert cells["env.MLPERF_MAX_BATCHSIZE=32 env.MLPERF_THREADS=4"][1] == "-"

    alpha = next(b for b in browser.find_elements("css selector", "button[data-machine-filter]")
                 if b.text.startswith("alpha"))
    alpha_index = alpha.get_attribute("data-machine-filter")
    alpha.click()
    for param in ("env.MLPERF_THREADS", "env.MLPERF_MAX_BATCHSIZE"):
        found = marks(param)
        assert len(found) == sweep["alpha"]
        assert {m.get_attribute("data-machine") for m in found} == {alpha_index}
    headers = [th.text for th in browser.find_elements("css selector", 'table[data-table="machines"] thead th')]
    assert headers == ["configuration", "alpha (Alpha CPU)"]
    assert browser.find_element("id", "summary").get_attribute("data-points") == str(sweep["alpha"])

    browser.find_element("css selector", 'button[data-param="env.MLPERF_THREADS"][data-value="1"]').click()
    assert plots() == ["env.MLPERF_MAX_BATCHSIZE"]  # one thread count left: no plot against it
    assert len(marks("env.MLPERF_MAX_BATCHSIZE")) == 2
    browser.find_element("id", "clear-filters").click()
    assert len(marks("env.MLPERF_THREADS")) == measured
    severe = [entry for entry in browser.get_log("browser") if entry.get("level") == "SEVERE"]
    assert not severe, severe
    shot = tmp_path / "sweep.png"
    browser.save_screenshot(str(shot))
    assert Path(shot).stat().st_size > 10_000


# -- machines in show and export -----------------------------------------------------------------
def test_show_groups_a_sweep_by_machine_and_export_filters_by_machine(sweep, cli, ckx_home):
    import csv
    import io
    import json

    proc = cli("show", "experiment:grid", "--group_by=machine")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "machine alpha (Alpha CPU) (no fingerprint): 6 point(s)" in text
    assert "machine beta (Beta CPU) (no fingerprint): 5 point(s)" in text
    assert text.index("machine alpha") < text.index("machine beta")
    assert "FAILED" in text and "out of memory" in text  # the failed point and its log tail

    proc = cli("show", "experiment:grid", "--machine=beta", "--json")
    (exp,) = json.loads(proc.stdout)["experiments"]
    assert len(exp["points"]) == 5 and {p["platform"]["hostname"] for p in exp["points"]} == {"beta"}
    assert [m["label"] for m in exp["machines"]] == ["beta (Beta CPU)"]
    assert sum(p["status"] == "failed" for p in exp["points"]) == 1

    proc = cli("export", "experiment:grid", "--format=csv", "--machine=Alpha CPU")
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 12 and {r["platform.hostname"] for r in rows} == {"alpha"}  # 6 points x 2 repetitions
    assert {r["node"] for r in rows} == {"alpha"}
    proc = cli("export", "experiment:grid", "--format=json", "--machine=nowhere")
    assert json.loads(proc.stdout)["experiments"][0]["points"] == []


def test_a_fingerprint_prefix_names_a_machine(ckx_home, cli):
    import json

    ctx = Context(Home(ckx_home), quiet=True, interactive=False)
    try:
        for platform_id, host in (("ab12cd34ef56ab78", "gamma"), ("ffee000011112222", "delta")):
            record_point(ctx, name="prints", choices=sweep_choices("1", "8"),
                         features={"hostname": host, "platform_id": platform_id, "cpu": {"model": "Same CPU"}},
                         repetitions=[Repetition(perf(10.0))])
    finally:
        ctx.close()
    proc = cli("show", "experiment:prints", "--machine=ab12", "--json")
    (exp,) = json.loads(proc.stdout)["experiments"]
    assert [p["platform"]["hostname"] for p in exp["points"]] == ["gamma"]
    assert exp["points"][0]["platform"]["fingerprint"] == "ab12cd34ef56ab78"
    proc = cli("show", "experiment:prints", "--group_by=machine")
    assert "machine gamma (Same CPU) (ab12cd34ef56ab78): 1 point(s)" in proc.stdout
