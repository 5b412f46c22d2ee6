"""The dashboard: its data, the self-contained page, the CLI, serving, and a real headless Chromium."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ckx.store.context import Context
from ckx.runs.dashboard import build_page, dashboard_data, render_html, start_server
from ckx.runs.experiment import Repetition, read_experiment
from ckx.runs.recording import record_point
from ckx.core.home import Home
from interrupt import ctrl_c_reaches_child

ROOT = Path(__file__).resolve().parent.parent

PLATFORM_A = {"hostname": "alpha", "machine": "x86_64", "cpu": {"model": "Alpha CPU", "logical_cores": 2},
              "os": {"name": "Debian 12"}}
PLATFORM_B = {"hostname": "beta", "machine": "aarch64", "cpu": {"model": "Beta CPU", "logical_cores": 8},
              "os": {"name": "Ubuntu 22.04"}}


def perf(value: float, valid: bool = True) -> dict:
    return {"metric": {"name": "samples_per_second", "value": value, "unit": "samples/s"}, "scenario": "Offline",
            "mode": "performance", "valid": valid,
            "latency_ms": {"p50": 1000 / value, "p90": 1100 / value, "p99": 1300 / value}}


def accuracy(value: float) -> dict:
    return {"metric": {"name": "top1", "value": value, "unit": "%"}, "scenario": "Offline", "mode": "accuracy",
            "accuracy": {"top1": value}, "valid": True}


def choices(cmd_key: str = "performance-offline", **env) -> dict:
    return {"program": "image-classification-onnx-cpu", "cmd_key": cmd_key, "env": env, "dep_add_tags": {},
            "deps": {"onnxruntime": {"env_uid": "aaaaaaaaaaaaaaaa", "version": "1.32.0", "soft": None,
                                     "tags": [], "package": "lib-python-onnxruntime-cpu"}}}


def record(home: Path, name: str, point_choices: dict, features: dict, values: list[dict], tags: list[str],
           repo: str | None = None) -> None:
    ctx = Context(Home(home), quiet=True, interactive=False)
    try:
        record_point(ctx, name=name, choices=point_choices, features=features, repo=repo, tags=tags,
                     repetitions=[Repetition(v, run_dir="/runs/x", started="2024-01-01T00:00:00+00:00",
                                             duration_s=1.0) for v in values])
    finally:
        ctx.close()


@pytest.fixture
def recorded(ckx_home) -> dict:
    """Two experiments, two machines: 4 points, 9 repetitions; tag 'arm' marks 1 point with 2 repetitions."""
    record(ckx_home, "resnet", choices(THREADS="1"), PLATFORM_A, [perf(20.0), perf(22.0), perf(21.0)], ["onnx"])
    record(ckx_home, "resnet", choices(THREADS="2"), PLATFORM_A, [perf(38.0), perf(41.0), perf(40.0, False)], ["onnx"])
    record(ckx_home, "resnet", choices(THREADS="8"), PLATFORM_B, [perf(90.0), perf(95.0)], ["arm"])
    record(ckx_home, "accuracy", choices("accuracy-offline"), PLATFORM_A, [accuracy(76.4)], ["acc"])
    return {"points": 4, "repetitions": 9, "arm": (1, 2), "acc": (1, 1)}


def experiments(home: Path) -> list:
    ctx = Context(Home(home), quiet=True, interactive=False)
    try:
        from ckx.runs.dashboard import collect_experiments

        return collect_experiments(ctx)
    finally:
        ctx.close()


def embedded_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="ckx-data">(.*?)</script>', html, re.S)
    assert match, "no embedded data"
    return json.loads(match.group(1))


# -- data and page -------------------------------------------------------------------------------
def test_dashboard_data_dedupes_machines_and_carries_every_repetition(recorded, ckx_home):
    data = dashboard_data(experiments(ckx_home))
    assert len(data["experiments"]) == 2 and len(data["points"]) == recorded["points"]
    assert sorted(m["label"] for m in data["machines"]) == ["alpha (Alpha CPU)", "beta (Beta CPU)"]
    assert sum(p["n"] for p in data["points"]) == recorded["repetitions"]
    (arm,) = [p for p in data["points"] if "arm" in p["tags"]]
    assert arm["values"] == [90.0, 95.0] and arm["stats"]["median"] == 92.5
    assert set(arm["tags"]) == {"arm"} and arm["env"] == {"THREADS": "8"}
    assert arm["latency"]["p99"] == pytest.approx((1300 / 90 + 1300 / 95) / 2)
    assert arm["deps"] == {"onnxruntime": "1.32.0"}
    (two,) = [p for p in data["points"] if p["env"] == {"THREADS": "2"}]
    assert two["valid"] == [True, True, False]
    (acc,) = [p for p in data["points"] if p["cmd_key"] == "accuracy-offline"]
    assert acc["accuracy"] == 76.4 and acc["metric"]["name"] == "top1"


def test_the_page_is_self_contained_and_embeds_its_data(recorded, ckx_home):
    ctx = Context(Home(ckx_home), quiet=True, interactive=False)
    html, data = build_page(ctx)
    ctx.close()
    assert embedded_data(html) == json.loads(json.dumps(data))
    lowered = html.lower()
    assert "<script src" not in lowered and "<link rel=\"stylesheet\"" not in lowered and "@import" not in lowered
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', lowered)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", lowered)
    assert "fetch(" not in html and "XMLHttpRequest" not in html


def test_data_cannot_close_the_script_element(ckx_home):
    record(ckx_home, "evil", choices(NOTE="</script><script>alert(1)</script>"), PLATFORM_A, [perf(1.0)],
           ["<b>&amp;"])
    ctx = Context(Home(ckx_home), quiet=True, interactive=False)
    html, _ = build_page(ctx, title="<i>title</i>")
    ctx.close()
    assert html.count("</script>") == 2  # the data element and the code element
    assert "<title>&lt;i&gt;title&lt;/i&gt;</title>" in html
    data = embedded_data(html)
    assert data["points"][0]["env"]["NOTE"] == "</script><script>alert(1)</script>"
    assert "<b>&amp;" in data["points"][0]["tags"]


def test_render_with_no_experiments_is_still_a_page():
    html = render_html(dashboard_data([]))
    assert embedded_data(html)["points"] == [] and "0 experiment(s)" in html


# -- the CLI -------------------------------------------------------------------------------------
def test_cli_writes_the_page_for_all_or_named_experiments(recorded, cli, cli_json, tmp_path):
    out = tmp_path / "report.html"
    proc = cli("dashboard", f"--out={out}")
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout and "2 experiment(s), 4 point(s), 9 repetition(s), 2 machine(s)" in proc.stdout
    assert len(embedded_data(out.read_text())["points"]) == 4
    code, data = cli_json("dashboard", "experiment:accuracy", f"--out={out}")
    assert code == 0 and data["experiments"] == 1 and data["points"] == 1
    assert [e["cid"] for e in embedded_data(out.read_text())["experiments"]] == ["local:experiment:accuracy"]
    code, data = cli_json("dashboard", "--tags=onnx", f"--out={out}")
    assert code == 0 and data["experiments"] == 1 and data["points"] == 3


def test_cli_default_out_is_dashboard_html_in_the_current_directory(recorded, cli, tmp_path):
    proc = cli("dashboard", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "dashboard.html").is_file()


def test_cli_errors(recorded, cli, tmp_path):
    proc = cli("dashboard", "experiment:missing", f"--out={tmp_path / 'x.html'}")
    assert proc.returncode == 3 and "no entry experiment:missing" in proc.stderr
    assert not (tmp_path / "x.html").exists()
    proc = cli("dashboard", "package:x", f"--out={tmp_path / 'x.html'}")
    assert proc.returncode == 2 and "shows experiments" in proc.stderr
    proc = cli("dashboard", "--serve", "--port=-3")
    assert proc.returncode == 2 and "--port" in proc.stderr
    proc = cli("dashboard", f"--out={tmp_path}")
    assert proc.returncode == 2 and "is a directory" in proc.stderr


def test_cli_with_no_experiments_warns_and_writes_an_empty_page(cli, tmp_path):
    out = tmp_path / "empty.html"
    proc = cli("dashboard", f"--out={out}")
    assert proc.returncode == 0 and "no experiments to show" in proc.stderr
    assert embedded_data(out.read_text())["experiments"] == []


def test_experiments_from_two_machines_meet_through_zip_and_unzip(ckx_home, tmp_path, cli, cli_json):
    other = tmp_path / "machine-b-home"
    record(other, "resnet", choices(THREADS="8"), PLATFORM_B, [perf(90.0), perf(95.0)], ["arm"])
    archive = tmp_path / "from-b.zip"
    proc = cli("zip", "experiment:resnet", f"--archive_name={archive}", env={"CKX_HOME": str(other)})
    assert proc.returncode == 0, proc.stderr
    record(ckx_home, "resnet", choices(THREADS="1"), PLATFORM_A, [perf(20.0), perf(22.0)], ["onnx"])
    assert cli("add", "repo:machine-b").returncode == 0
    proc = cli("unzip", "repo:machine-b", f"--zip={archive}")
    assert proc.returncode == 0, proc.stderr
    code, data = cli_json("dashboard", f"--out={tmp_path / 'all.html'}")
    assert code == 0 and data["experiments"] == 2 and data["machines"] == 2 and data["repetitions"] == 4
    page = embedded_data((tmp_path / "all.html").read_text())
    assert sorted(e["cid"] for e in page["experiments"]) == ["local:experiment:resnet", "machine-b:experiment:resnet"]
    proc = cli("export", "experiment:*", "--format=csv")
    assert proc.returncode == 0 and len(proc.stdout.strip().splitlines()) == 1 + 4


# -- serving -------------------------------------------------------------------------------------
def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def test_the_server_rebuilds_the_page_on_each_request(recorded, ckx_home):
    with start_server(Home(ckx_home), port=0) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.port > 0
        status, kind, body = _get(server.url)
        assert status == 200 and kind.startswith("text/html") and len(embedded_data(body)["points"]) == 4
        record(ckx_home, "later", choices(THREADS="3"), PLATFORM_A, [perf(30.0)], ["late"])
        status, kind, body = _get(server.url + "data.json")
        assert status == 200 and kind == "application/json" and len(json.loads(body)["points"]) == 5
        assert _get(server.url + "favicon.ico")[0] == 204
        assert _get(server.url + "../etc/passwd")[0] == 404
        assert _get(server.url + "nothing")[0] == 404


def test_a_busy_port_is_a_usage_error(ckx_home):
    from ckx.core.errors import UsageError

    with start_server(Home(ckx_home), port=0) as first:
        with pytest.raises(UsageError, match="cannot serve"):
            start_server(Home(ckx_home), port=first.port)


def _serve(ckx_home: Path, seconds: int, *args: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, CKX_HOME=str(ckx_home), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "ckx", "dashboard", "--serve", "--port=0",
                             f"--serve_for={seconds}", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, preexec_fn=ctrl_c_reaches_child)
    line = proc.stdout.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
    if not match:
        proc.kill()
        raise AssertionError(f"no URL in {line!r}: {proc.stderr.read()}")
    return proc, match.group(1)


def test_cli_serve_prints_the_url_and_stops_after_serve_for(recorded, ckx_home):
    proc, url = _serve(ckx_home, 3)
    try:
        status, _, body = _get(url)
        assert status == 200 and len(embedded_data(body)["points"]) == 4
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert f"served {url}" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_serve_stops_cleanly_on_ctrl_c(recorded, ckx_home):
    proc, url = _serve(ckx_home, 120)
    try:
        assert _get(url)[0] == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopped" in out and f"served {url}" in out
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url, timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- a real browser ------------------------------------------------------------------------------
BROWSER_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000")


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}: the CI job must install it (apt-get install chromium chromium-driver; "
                    f"pip install selenium)")
    pytest.skip(message)


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium driven through chromedriver, with a fresh profile; browser logs kept."""
    chromium = next((p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if Path(p).is_file()), None)
    chromium = chromium or shutil.which("chromium")
    driver_path = "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").is_file() else shutil.which("chromedriver")
    if not chromium or not driver_path:
        _unavailable("chromium and chromedriver are not installed (/usr/bin/chromium, /usr/bin/chromedriver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-', dir=tmp_path)}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _check_page(driver, expected: dict, screenshot: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "true")

    def count(selector: str) -> int:
        return len(driver.find_elements("css selector", selector))

    def summary() -> tuple[int, int]:
        element = driver.find_element("id", "summary")
        return int(element.get_attribute("data-points")), int(element.get_attribute("data-repetitions"))

    assert summary() == (expected["points"], expected["repetitions"])
    assert count('#overview circle[data-kind="rep"]') == expected["repetitions"]
    assert count('#overview [data-kind="point"]') == expected["points"]
    assert count('#experiments circle[data-kind="rep"]') == expected["repetitions"]
    assert count("#experiments table.points tbody tr") == expected["points"]
    assert count('#overview [data-plot="latency"] circle[data-kind="latency"]') == 3 * 3  # 3 perf points x p50/p90/p99
    assert count("section.experiment") == 2
    driver.save_screenshot(str(screenshot))

    driver.find_element("css selector", 'button.tag[data-tag="arm"]').click()
    points, reps = expected["arm"]
    assert summary() == (points, reps)
    assert count('#overview circle[data-kind="rep"]') == reps
    assert count('#overview [data-kind="point"]') == points
    assert count("section.experiment") == 1
    assert count('#experiments circle[data-kind="rep"]') == 0  # one experiment: its plots are the overview's
    driver.find_element("css selector", 'button.tag[data-tag="acc"]').click()  # arm AND acc: nothing
    assert summary() == (0, 0) and count('#overview circle[data-kind="rep"]') == 0
    assert "no point matches" in driver.find_element("id", "overview").text
    driver.find_element("id", "clear-filters").click()
    assert summary() == (expected["points"], expected["repetitions"])
    driver.find_element("css selector", 'button.tag[data-tag="acc"]').click()
    assert summary() == expected["acc"]
    assert count('#overview [data-plot="metric"]') == 1

    severe = [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
    assert not severe, severe
    assert screenshot.stat().st_size > 10_000


@pytest.mark.browser
@pytest.mark.slow
def test_dashboard_in_headless_chromium_from_a_file_and_from_serve(recorded, ckx_home, tmp_path, cli, browser):
    out = tmp_path / "report.html"
    proc = cli("dashboard", f"--out={out}")
    assert proc.returncode == 0, proc.stderr
    browser.get(out.as_uri())
    _check_page(browser, recorded, tmp_path / "dashboard-file.png")

    server, url = _serve(ckx_home, 120)
    try:
        browser.get(url)
        _check_page(browser, recorded, tmp_path / "dashboard-served.png")
    finally:
        server.kill()
        server.wait()
