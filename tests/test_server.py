"""The web API over a real socket on 127.0.0.1: results, status codes, limits, tokens, jobs, OpenAPI.

The attacks the server must hold (no token, writes without --allow_writes, server paths, slow or
oversized requests) have their own tests in tests/security/test_web_*.py.
"""
from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import ROOT, make_ck_repo
from httpserver import serve
from webclient import Client, start_server  # noqa: F401  (start_server is a fixture)
from ckx.api import ACTIONS, access
from ckx.web.openapi import openapi_spec
from ckx.web.policy import WEB_ACTIONS, http_status, is_loopback
from interrupt import ctrl_c_reaches_child

CK_ENTRIES = {
    "package": [
        ("ml-model-mlperf-resnet50-onnx", "0a1b2c3d4e5f6071", {"tags": ["ml-model", "model", "onnx", "resnet50"]}),
        ("imagenet-2012-val-min", "1a1b2c3d4e5f6071", {"tags": ["dataset", "imagenet", "val", "min"]}),
        (None, "2a1b2c3d4e5f6071", {"tags": ["lib", "python-package", "numpy"]}),
    ],
    "soft": [("dataset.imagenet.val", "3a1b2c3d4e5f6071", {"tags": ["dataset", "imagenet", "val"]})],
}


@pytest.fixture
def repos(tmp_path, monkeypatch):
    """A CK-format repo and a native repo with entries; an empty built-in repo so counts are exact."""
    empty = tmp_path / "empty-builtin"
    empty.mkdir()
    (empty / "ckx-repo.json").write_text('{"name": "builtin", "uid": "00000000000000b1", "schema_version": 1}')
    monkeypatch.setenv("CKX_BUILTIN_REPO", str(empty))
    root = make_ck_repo(tmp_path / "ck", "ck-mini", CK_ENTRIES)
    assert access({"action": "add", "module": "repo", "entry": "ckmini", "path": str(root)})["return"] == 0
    for alias, tags in [("resnet50-local", "model,onnx,resnet50,local"), ("bert", "model,onnx,bert")]:
        assert access({"action": "add", "module": "package", "entry": alias, "tags": tags,
                       "meta": {"name": alias, "source": {"kind": "hook"}}})["return"] == 0
    return root


@pytest.fixture
def client(start_server, repos):
    """A client of a server started with --allow_writes."""
    c = Client.of(start_server(allow_writes=True))
    yield c
    c.close()


def found(data: dict) -> list[str]:
    assert data["return"] == 0, data
    return sorted(e["cid"] for e in data["entries"])


# =========================================================================== results


def test_search_post_matches_access(client):
    status, data = client.post({"action": "search", "module": "package", "tags": "model,onnx"})
    assert status == 200
    assert found(data) == ["ckmini:package:ml-model-mlperf-resnet50-onnx", "local:package:bert",
                           "local:package:resnet50-local"]
    assert found(data) == found(access({"action": "search", "module": "package", "tags": "model,onnx"}))


def test_search_get_with_query_parameters(client):
    status, data = client.get("/api?action=search&module=package&tags=model,-bert")
    assert status == 200
    assert found(data) == ["ckmini:package:ml-model-mlperf-resnet50-onnx", "local:package:resnet50-local"]


def test_load_and_list(client):
    status, data = client.post({"action": "load", "cid": "package:imagenet-2012-val-min"})
    assert status == 200 and data["uid"] == "1a1b2c3d4e5f6071" and data["meta"]["tags"][0] == "dataset"
    status, data = client.get("/api?action=list&module=soft")
    assert status == 200 and found(data) == ["ckmini:soft:dataset.imagenet.val"]
    status, data = client.get("/api?action=load&module=package&entry=none-such")
    assert status == 404 and data["return"] == 3


def test_write_then_read_through_the_server(client):
    status, data = client.post({"action": "add", "module": "experiment", "entry": "via-web", "tags": "web"})
    assert status == 200, data
    status, data = client.get("/api?action=search&module=experiment&tags=web")
    assert found(data) == ["local:experiment:via-web"]
    status, data = client.post({"action": "add", "module": "experiment", "entry": "via-web"})
    assert status == 500 and data["return"] == 1 and "already exists" in data["error"]


def test_changes_by_other_processes_show(start_server, repos):
    client = Client.of(start_server(refresh_interval=0))
    assert found(client.post({"action": "list", "module": "experiment"})[1]) == []
    assert access({"action": "add", "module": "experiment", "entry": "from-outside"})["return"] == 0
    assert found(client.post({"action": "list", "module": "experiment"})[1]) == ["local:experiment:from-outside"]


def test_twenty_parallel_searches(start_server, repos):
    server = start_server()
    queries = [
        ({"action": "search", "module": "package", "tags": "model,onnx"}, 3),
        ({"action": "search", "module": "package", "tags": "imagenet"}, 1),
        ({"action": "search", "tags": "dataset"}, 2),
        ({"action": "search", "module": "package", "tags": "lib,python-package,numpy"}, 1),
    ]

    def one(i: int) -> tuple[int, int, int]:
        query, expected = queries[i % len(queries)]
        c = Client.of(server)
        try:
            status, data = c.post(query)
            return status, len(data.get("entries", [])), expected
        finally:
            c.close()

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(one, range(20)))
    assert all(status == 200 and count == expected for status, count, expected in answers), answers


def test_keep_alive_connection_serves_many_requests(client):
    for _ in range(10):
        status, data = client.post({"action": "version"})
        assert status == 200 and data["version"]


# =========================================================================== refusals


def test_bad_json_is_400_with_a_message(client):
    status, data, _ = client.request("POST", "/api", raw=b'{"action": "search",')
    assert status == 400 and "invalid JSON" in data["error"] and "line 1" in data["error"]
    status, data, _ = client.request("POST", "/api", raw=b'["search"]')
    assert status == 400 and "object" in data["error"]
    status, data, _ = client.request("POST", "/api", raw=b"\xff\xfe")
    assert status == 400 and "UTF-8" in data["error"]
    status, data = client.post({"module": "package"})
    assert status == 400 and "action" in data["error"]


def test_unknown_action_is_404(client):
    status, data = client.post({"action": "explode"})
    assert status == 404 and "unknown action" in data["error"]
    status, data = client.get("/api?action=explode")
    assert status == 404


def test_actions_outside_the_table_are_refused(client):
    for request in ({"action": "serve"}, {"action": "virtual", "module": "env", "shell_cmd": "id"},
                    {"action": "activate", "module": "venv", "entry": "x"},
                    {"action": "zip", "module": "package", "entry": "bert"},
                    {"action": "rm", "module": "repo", "entry": "ckmini", "all": True, "force": True}):
        status, data = client.post(request)
        assert status == 403, (request, data)
        assert "not available over the web API" in data["error"]
    assert access({"action": "list", "module": "repo"})["repos"][-1]["name"] == "ckmini"
    assert ("serve", None) not in WEB_ACTIONS and ("virtual", "env") not in WEB_ACTIONS
    # every allowed pair names a real action (a typo would silently hide one)
    assert WEB_ACTIONS <= {(a.name, a.module) for a in ACTIONS}


def test_ill_typed_and_unknown_options_are_400_naming_the_option(client):
    status, data = client.post({"action": "search", "module": "package", "tags": 5})
    assert status == 400 and "--tags" in data["error"], data
    status, data = client.get("/api?action=search&module=package&tag=model")
    assert status == 400 and "did you mean --tags?" in data["error"], data
    # a long action is checked before it becomes a job
    status, data = client.post({"action": "install", "module": "package", "tags": "x", "ofline": True})
    assert status == 400 and "job" not in data and "did you mean --offline?" in data["error"], data


def test_a_refused_input_is_refused_in_any_spelling_and_value(client):
    for value in (True, "yes", "1"):
        status, data = client.post({"action": "rm", "module": "repo", "entry": "ckmini", "all": value, "f": True})
        assert status == 403, (value, data)
    assert access({"action": "list", "module": "repo"})["repos"][-1]["name"] == "ckmini"


def test_get_of_an_action_that_writes_is_405(client):
    status, data = client.get("/api?action=add&module=experiment&entry=x")
    assert status == 405 and "POST" in data["error"]
    assert found(access({"action": "list", "module": "experiment"})) == []


def test_path_traversal_in_cids_is_refused(client):
    for request in ({"action": "load", "module": "package", "entry": "../../etc/passwd"},
                    {"action": "load", "cid": "local:package:../x"},
                    {"action": "load", "module": "..", "entry": "x"},
                    {"action": "cp", "cids": ["package:bert", "local:package:..\\x"]},
                    {"action": "load", "module": "package", "entry": ".."}):
        status, data = client.post(request)
        assert status == 400, (request, data)
    status, data = client.get("/api?action=load&module=package&entry=../../x")
    assert status == 400


def test_body_too_large_is_413(start_server, repos):
    client = Client.of(start_server(max_body=1024))
    status, data = client.post({"action": "search", "padding": "x" * 2048})
    assert status == 413 and "1024" in data["error"]
    status, data = client.post({"action": "version"})  # a fresh connection works
    assert status == 200


def test_wrong_content_type_is_415(client):
    status, data, _ = client.request("POST", "/api", raw=b'{"action": "version"}', headers={"Content-Type": "text/plain"})
    assert status == 415


def test_foreign_host_header_is_refused_on_a_loopback_server(client):
    status, data, _ = client.request("GET", "/api?action=version", headers={"Host": "evil.example:80"})
    assert status == 403 and "loopback" in data["error"]


def test_unknown_endpoint_and_method(client):
    assert client.get("/nothing")[0] == 404
    status, data, response = client.request("DELETE", "/api")
    assert status == 405 and "POST" in response.getheader("Allow")


def test_token_is_required_when_set(start_server, repos):
    server = start_server(token="s3cret")
    port = server.server_address[1]
    status, data = Client(port).post({"action": "version"})
    assert status == 401 and "token" in data["error"]
    status, data = Client(port, token="wrong").post({"action": "version"})
    assert status == 401
    status, data = Client(port).get("/openapi.json")
    assert status == 401
    status, data = Client(port, token="s3cret").post({"action": "search", "module": "soft"})
    assert status == 200 and found(data) == ["ckmini:soft:dataset.imagenet.val"]


def test_a_random_token_is_made_when_none_is_given(start_server, repos):
    first, second = start_server(), start_server()
    assert len(first.token) >= 40 and first.token != second.token
    assert Client(first.server_address[1]).get("/api?action=version")[0] == 401
    assert Client(first.server_address[1], token=second.token).get("/api?action=version")[0] == 401
    assert Client.of(first).get("/api?action=version")[0] == 200


def test_a_browser_trades_the_token_in_the_url_for_a_cookie(start_server, repos):
    server = start_server()
    port = server.server_address[1]
    status, data, response = Client(port).request("GET", f"/?token={server.token}")
    assert status == 200 and data["service"] == "ckx"
    cookie = response.getheader("Set-Cookie")
    assert cookie.startswith(f"ckx-token-{port}={server.token};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    pair = cookie.split(";")[0]
    status, data, _ = Client(port).request("GET", "/api?action=list&module=soft", headers={"Cookie": f"a=b; {pair}"})
    assert status == 200 and found(data) == ["ckmini:soft:dataset.imagenet.val"]
    # the token in the URL is not an option of the action, and a wrong one is refused
    status, data, _ = Client(port).request("GET", f"/api?action=version&token={server.token}")
    assert status == 200 and data["version"]
    assert Client(port).request("GET", "/api?action=version&token=nope")[0] == 401
    assert Client(port).request("GET", "/api?action=version", headers={"Cookie": f"ckx-token-{port}=nope"})[0] == 401


def test_non_loopback_addresses_are_recognised():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_cli_prints_the_url_with_a_token_once_and_keeps_it_private(ckx_home, repos):
    port = _free_port()
    env = {**os.environ, "CKX_HOME": str(ckx_home), "PYTHONPATH": str(ROOT)}
    env.pop("CKX_SERVE_TOKEN", None)
    serving = subprocess.Popen([sys.executable, "-m", "ckx", "serve", f"--port={port}", "--quiet"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=ctrl_c_reaches_child)
    token_file = ckx_home / "serve-token"
    try:
        deadline = time.monotonic() + 30
        while not token_file.exists():
            assert time.monotonic() < deadline and serving.poll() is None, serving.stderr.read()
            time.sleep(0.1)
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        status, data = Client(port, token=token).get("/api?action=version")
        assert status == 200 and data["version"]
        assert Client(port).get("/api?action=version")[0] == 401
        assert Client(port, token=token).post({"action": "add", "module": "experiment", "entry": "x"})[0] == 403
    finally:
        serving.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = serving.communicate(timeout=30)
    assert out.count(token) == 1 and err.count(token) == 0, (out, err)
    assert f"http://127.0.0.1:{port}/?token={token}" in out
    assert not token_file.exists()  # a stopped server leaves no token behind


# =========================================================================== jobs


def _git_remote(tmp_path: Path) -> str:
    root = tmp_path / "remote"
    root.mkdir()
    (root / "ckx-repo.json").write_text('{"name": "web-pulled", "uid": "abababababababab", "schema_version": 1}')
    (root / "experiments" / "w1").mkdir(parents=True)
    (root / "experiments" / "w1" / "meta.json").write_text(
        '{"uid": "abababababababa1", "alias": "w1", "tags": ["web"], "schema_version": 1}')
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run(["git", *ident, *args], cwd=root, check=True, capture_output=True, timeout=60)
    return root.as_uri()


def wait_for_job(client: Client, job: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, data = client.get(f"/api/jobs/{job}")
        assert status == 200, data
        if data["status"] in ("done", "failed"):
            return data
        assert time.monotonic() < deadline, data
        time.sleep(0.05)


def test_long_action_becomes_a_job_that_completes(client, tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    with serve(tmp_path) as site:  # git's plain-HTTP protocol: a bare repo as static files
        bare = tmp_path / "remote.git"
        subprocess.run(["git", "clone", "-q", "--bare", _git_remote(tmp_path), str(bare)], check=True, timeout=60)
        subprocess.run(["git", "update-server-info"], cwd=bare, check=True, timeout=60)
        status, data, response = client.request("POST", "/api", {"action": "pull", "module": "repo",
                                                                 "entry": "web-pulled", "url": site.url_for("remote.git")})
        assert status == 202, data
        job = wait_for_job(client, data["job"])
    assert data["job"] and response.getheader("Location") == f"/api/jobs/{data['job']}"
    assert job["status"] == "done" and job["http_status"] == 200
    assert job["result"]["repo"]["name"] == "web-pulled" and job["result"]["repo"]["state"] == "cloned"
    status, data = client.get("/api?action=search&module=experiment&tags=web")
    assert found(data) == ["web-pulled:experiment:w1"]
    status, data = client.get("/api/jobs")
    assert status == 200 and [j["status"] for j in data["jobs"]] == ["done"]


def test_failing_job_reports_its_error(client, http_server):
    status, data = client.post({"action": "pull", "module": "repo", "entry": "x", "url": http_server.url_for("no.git")})
    assert status == 202
    job = wait_for_job(client, data["job"])
    assert job["status"] == "failed" and job["http_status"] == 500 and "git clone" in job["result"]["error"]


def test_unknown_job_is_404(client):
    status, data = client.get("/api/jobs/0123456789abcdef")
    assert status == 404


# =========================================================================== description and mapping


def test_openapi_document_validates(client, start_server):
    from openapi_spec_validator import validate

    status, spec = client.get("/openapi.json")
    assert status == 200
    validate(spec)
    actions = spec["components"]["schemas"]["Request"]["properties"]["action"]["enum"]
    assert "search" in actions and "serve" not in actions and "zip" not in actions
    assert "bearerAuth" in spec["components"]["securitySchemes"] and spec["security"] == [{"bearerAuth": []}]
    validate(openapi_spec(allow_writes=False))
    assert "without --allow_writes" in openapi_spec(allow_writes=False)["info"]["description"]


@pytest.mark.parametrize("code,status", [(0, 200), (2, 400), (3, 404), (5, 422), (1, 500), (4, 500), (6, 500)])
def test_status_mapping(code, status):
    assert http_status({"return": code}) == status
