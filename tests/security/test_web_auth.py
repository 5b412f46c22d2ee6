"""A local process without the token gets nothing from `ckx serve`: every endpoint and verb answers 401 JSON."""
from __future__ import annotations

import os
import stat

import pytest

from webclient import Client, start_server  # noqa: F401  (start_server is a fixture)
from ckx.api import access
from ckx.core.errors import UsageError
from ckx.web.token import choose_token, store_token

REQUESTS = [
    ("GET", "/", None), ("GET", "/api?action=version", None), ("GET", "/api?action=list&module=soft", None),
    ("GET", "/api/jobs", None), ("GET", "/api/jobs/0123456789abcdef", None), ("GET", "/openapi.json", None),
    ("GET", "/nothing", None), ("POST", "/api", {"action": "version"}), ("POST", "/elsewhere", {"action": "version"}),
    ("DELETE", "/api", None), ("PUT", "/api", {"action": "version"}), ("OPTIONS", "/api", None),
]


def _program(marker) -> dict:
    return {"action": "add", "module": "program", "entry": "evil", "tags": "evil",
            "meta": {"tags": ["evil"], "run_cmds": {"go": {"argv": ["/bin/sh", "-c", f"touch {marker}"]}}}}


@pytest.mark.parametrize("method,path,body", REQUESTS)
@pytest.mark.parametrize("token", [None, "", "wrong", "Bearer"])
def test_every_endpoint_refuses_a_request_without_the_right_token(start_server, method, path, body, token):
    server = start_server(allow_writes=True)
    status, data, response = Client(server.server_address[1], token=token).request(method, path, body)
    assert status == 401, data
    assert data["return"] == 2 and "token" in data["error"] and response.getheader("Content-Type") == "application/json"
    assert response.getheader("WWW-Authenticate") == 'Bearer realm="ckx"'


def test_near_misses_of_the_token_are_refused(start_server):
    server = start_server(allow_writes=True)
    port, token = server.server_address[1], server.token
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for guess in (token[:-1], token + "x", flipped, token.upper() if token.upper() != token else token.lower(),
                  f" {token} x"):
        assert Client(port, token=guess).get("/api?action=version")[0] == 401, guess
    status, data, _ = Client(port).request("GET", "/api?action=version", headers={"Authorization": f"Basic {token}"})
    assert status == 401


def test_a_local_process_without_the_token_cannot_add_and_run_a_shell_program(start_server, tmp_path):
    server = start_server(allow_writes=True)
    marker = tmp_path / "ran"
    anonymous = Client(server.server_address[1])
    assert anonymous.post(_program(marker))[0] == 401
    assert anonymous.post({"action": "run", "module": "program", "entry": "evil", "cmd_key": "go"})[0] == 401
    assert access({"action": "load", "module": "program", "entry": "evil"})["return"] == 3
    assert not marker.exists()
    assert Client.of(server).get("/api/jobs")[1]["jobs"] == []


def test_a_token_in_the_url_of_a_post_is_not_accepted(start_server, tmp_path):
    server = start_server(allow_writes=True)
    status, data, _ = Client(server.server_address[1]).request("POST", f"/api?token={server.token}",
                                                                _program(tmp_path / "ran"))
    assert status == 401
    assert access({"action": "load", "module": "program", "entry": "evil"})["return"] == 3


def test_the_token_file_is_private_whatever_the_umask(tmp_path):
    path = tmp_path / "home" / "serve-token"
    path.parent.mkdir()
    path.write_text("old\n")
    path.chmod(0o644)
    previous = os.umask(0)
    try:
        token = choose_token(None)
        store_token(path, token)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == token + "\n" and len(token) >= 40
    assert [p.name for p in path.parent.iterdir()] == ["serve-token"]  # no temporary file left behind


@pytest.mark.parametrize("bad", ["two words", "tab\there", "caf\u00e9", "new\nline", "a;b", 'a"b', "a,b", "a\\b"])
def test_a_token_that_cannot_travel_in_a_header_or_a_cookie_is_refused(bad):
    with pytest.raises(UsageError, match="--token"):
        choose_token(bad)
