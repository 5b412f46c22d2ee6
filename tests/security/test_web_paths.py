"""Inputs that name the server's own files are refused over the web, even with --allow_writes."""
from __future__ import annotations

import hashlib
import json
import zipfile

import pytest

from webclient import Client, start_server  # noqa: F401  (start_server is a fixture)
from ckx.api import access
from ckx.web.policy import check_request, server_path_options, web_actions

PATH_INPUTS = [(a, name) for a in web_actions() for name in server_path_options(a)]


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "shadow"
    path.write_text("root:$6$not-for-you:19000:0:99999:7:::\n")
    return path


def test_install_from_a_local_path_leaks_no_checksum(start_server, secret):
    client = Client.of(start_server(allow_writes=True))
    status, data, response = client.request("POST", "/api", {"action": "install", "module": "package",
                                                             "tags": "anything", "local_path": str(secret)})
    assert status == 400 and "'local_path'" in data["error"], data
    text = json.dumps(data) + str(response.headers)
    content = secret.read_bytes()
    for digest in (hashlib.md5(content), hashlib.sha256(content), hashlib.sha1(content)):
        assert digest.hexdigest() not in text
    assert client.get("/api/jobs")[1]["jobs"] == []  # it never became a job
    assert access({"action": "show", "module": "env"}).get("envs", []) == []


@pytest.mark.parametrize("action,name", PATH_INPUTS, ids=lambda x: getattr(x, "label", x))
def test_every_server_path_input_is_refused(start_server, secret, action, name):
    client = Client.of(start_server(allow_writes=True))
    request = {"action": action.name, "module": action.module or "experiment", name: str(secret)}
    status, data = client.post(request)
    assert status == 400 and f"'{name}'" in data["error"] and "path on the server" in data["error"], data
    assert client.get("/api/jobs")[1]["jobs"] == []


def test_the_path_inputs_cover_the_declared_path_options():
    labels = {(a.label, name) for a, name in PATH_INPUTS}
    assert {("install package", "local_path"), ("add repo", "path"), ("detect soft", "full_path"),
            ("detect soft", "search_dir"), ("detect soft", "python")} <= labels
    for action in web_actions():
        for option in action.options:
            if option.type == "path":
                assert (action.label, option.name) in labels


def test_adding_a_repo_over_a_server_directory_is_refused(start_server, tmp_path):
    client = Client.of(start_server(allow_writes=True))
    status, data = client.post({"action": "add", "module": "repo", "entry": "etc", "path": str(tmp_path)})
    assert status == 400 and "'path'" in data["error"]
    assert "etc" not in [r["name"] for r in access({"action": "list", "module": "repo"})["repos"]]


@pytest.mark.parametrize("url", ["file:///etc", "/etc", "FILE:///etc", "../../etc", "ext::sh -c id"])
def test_pulling_a_local_repository_is_refused(start_server, url):
    client = Client.of(start_server(allow_writes=True))
    status, data = client.post({"action": "pull", "module": "repo", "entry": "stolen", "url": url})
    assert status == 400 and "'url'" in data["error"] and "another machine" in data["error"], data
    assert client.get("/api/jobs")[1]["jobs"] == []
    assert "stolen" not in [r["name"] for r in access({"action": "list", "module": "repo"})["repos"]]


def test_unzipping_a_server_file_is_refused(start_server, tmp_path):
    archive = tmp_path / "entries.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("experiments/leaked/meta.json", '{"uid": "00000000000000e1", "alias": "leaked", "schema_version": 1}')
    client = Client.of(start_server(allow_writes=True))
    for value in (str(archive), archive.as_uri()):
        status, data = client.post({"action": "unzip", "module": "repo", "zip": value})
        assert status == 400 and "'zip'" in data["error"], data
    assert client.get("/api/jobs")[1]["jobs"] == []
    assert access({"action": "load", "module": "experiment", "entry": "leaked"})["return"] == 3


def test_remote_urls_are_still_accepted(start_server, http_server):
    client = Client.of(start_server(allow_writes=True))
    status, data = client.post({"action": "pull", "module": "repo", "entry": "remote", "url": http_server.url_for("x.git")})
    assert status == 202, data
    for url in ("git@example.org:owner/repo.git", "ssh://git@example.org/owner/repo", "https://example.org/r.git"):
        inp, action = check_request({"action": "pull", "module": "repo", "url": url}, method="POST", allow_writes=True)
        assert action.label == "pull repo" and inp["url"] == url
