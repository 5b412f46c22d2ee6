"""Oversized and ill-typed requests to `ckx serve` get a 4xx JSON answer naming what was wrong, never a 500 or HTML."""
from __future__ import annotations

import json
import socket

import pytest

from webclient import Client, start_server  # noqa: F401  (start_server is a fixture)
from ckx.api import access
from ckx.core.errors import UsageError
from ckx.core.home import Home
from ckx.core.limits import DEFAULT_LIMITS
from ckx.web.policy import web_actions
from ckx.web.server import make_server


def _raw(server, data: bytes, *, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as it is; the status, headers and body of the answer."""
    with socket.create_connection(server.server_address[:2], timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
                head, _, body = received.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), None)
                if length is not None and len(body) >= length:
                    break
        except ConnectionResetError:
            pass
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _json_error(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict:
    assert status == expected, (status, body)
    assert headers["content-type"] == "application/json" and b"<html" not in body.lower()
    data = json.loads(body)
    assert data["return"] != 0 and data["error"]
    return data


def test_a_body_over_the_limit_is_413_json_without_being_read(start_server):
    server = start_server(max_body=4096)
    head = (f"POST /api HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {server.token}\r\nContent-Length: {10 * 1024 * 1024}\r\n\r\n").encode()
    data = _json_error(*_raw(server, head + b"{" * 1000), 413)
    assert "4096" in data["error"] and str(10 * 1024 * 1024) in data["error"]


def test_the_body_limit_comes_from_the_limits(start_server):
    server = start_server(limits=DEFAULT_LIMITS.replaced({"request_max_bytes": 2048}))
    status, data = Client.of(server).post({"action": "search", "search_string": "x" * 4096})
    assert status == 413 and "2048" in data["error"]


def test_a_url_over_the_limit_is_414_json(start_server):
    server = start_server()
    request = (f"GET /api?action=search&tags={'a' * (DEFAULT_LIMITS.request_max_url_bytes + 10)} HTTP/1.1\r\n"
               f"Host: 127.0.0.1\r\nAuthorization: Bearer {server.token}\r\n\r\n").encode()
    data = _json_error(*_raw(server, request), 414)
    assert str(DEFAULT_LIMITS.request_max_url_bytes) in data["error"]
    huge = b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n"  # past what the standard library reads at all
    _json_error(*_raw(server, huge), 414)


@pytest.mark.parametrize("extra", [
    [f"X-Filler-{i}: y" for i in range(DEFAULT_LIMITS.request_max_headers + 1)],
    [f"X-Filler-{i}: y" for i in range(150)],
    ["X-Big: " + "y" * (DEFAULT_LIMITS.request_max_header_bytes + 1)],
    ["X-Huge: " + "y" * 70000],
], ids=["count", "count-past-the-stdlib-cap", "size", "one-line-past-the-stdlib-cap"])
def test_too_many_or_too_large_headers_are_431_json(start_server, extra):
    server = start_server()
    request = "\r\n".join(["GET /api?action=version HTTP/1.1", "Host: 127.0.0.1",
                           f"Authorization: Bearer {server.token}", *extra, "", ""]).encode()
    data = _json_error(*_raw(server, request), 431)
    assert "headers" in data["error"]


@pytest.mark.parametrize("request_line,expected", [
    (b"GARBAGE\r\n", 400), (b"GET / HTTP/2.0\r\n", 505), (b"BREW /api HTTP/1.1\r\n", 501),
    (b"GET / HTTP/1.1x\r\n", 400), (b"GET /\r\n", 401),
    (b"GET / HTTP/1.1\r\nHost: [::1\r\n", 403),
])
def test_errors_of_the_http_layer_are_json(start_server, request_line, expected):
    server = start_server()
    _json_error(*_raw(server, request_line + b"\r\n"), expected)


def test_wrong_type_and_too_many_tags_are_400_naming_the_field(start_server):
    client = Client.of(start_server())
    for tags in (5, {"a": 1}, [["nested"]], ["t"] * 100_000, ",".join(["t"] * 100_000)):
        status, data = client.post({"action": "search", "module": "soft", "tags": tags})
        assert status == 400 and "--tags" in data["error"], (str(tags)[:40], data)


@pytest.mark.parametrize("depth", [65, 900, 200_000])
def test_a_deeply_nested_body_is_400_naming_the_field(start_server, depth):
    client = Client.of(start_server())
    body = b'{"action": "search", "module": "soft", "search_dict": ' + b"[" * depth + b"]" * depth + b"}"
    status, data, _ = client.request("POST", "/api", raw=body)
    assert status == 400 and "'search_dict'" in data["error"] and "64 levels" in data["error"], data
    assert client.post({"action": "version"})[0] == 200  # and the server goes on


def _wrong_value(option_type: str):
    """A JSON value the option's type refuses."""
    return [1, 2] if option_type == "dict" else {"nested": {"object": 1}}


CASES = [(action, option) for action in web_actions() for option in action.options if option.type != "any"]


@pytest.mark.parametrize("action,option", CASES, ids=lambda x: getattr(x, "label", None) or getattr(x, "name", None))
def test_an_ill_typed_value_for_any_declared_option_is_400_naming_it(start_server, action, option):
    client = Client.of(start_server(allow_writes=True))
    request = {"action": action.name, "module": action.module or "experiment", option.name: _wrong_value(option.type)}
    status, data = client.post(request)
    assert status == 400, data
    assert f"--{option.name}" in data["error"] or f"'{option.name}'" in data["error"], data
    assert client.get("/api/jobs")[1]["jobs"] == []


RESERVED = ("action", "module", "entry", "repo", "cid", "cids", "rest", "module_uoa", "data_uoa", "repo_uoa",
            "quiet", "json")


@pytest.mark.parametrize("key", RESERVED)
def test_an_ill_typed_reserved_key_is_a_400_not_a_500(start_server, key):
    client = Client.of(start_server(allow_writes=True))
    for value in (5, 1.5, True, [1], [[1]], {"a": {"b": 1}}, "../x", "\x00"):
        request = {"action": value} if key == "action" else {"action": "search", key: value}
        status, data = client.post(request)
        assert status < 500 and data.get("error_type") != "InternalError", (key, value, data)
        if isinstance(value, dict):  # no reserved key takes an object
            assert status == 400 and data["return"] == 2, (key, value, data)


def test_a_busy_port_is_a_usage_error_naming_it(ckx_home):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError) as caught:
            make_server(home=Home(ckx_home), host="127.0.0.1", port=port)
        assert f"127.0.0.1:{port}" in caught.value.message and "--port" in caught.value.hint


def test_serve_on_a_busy_port_says_so_and_keeps_the_running_servers_token(cli, ckx_home):
    token_file = ckx_home / "serve-token"
    token_file.write_text("the-running-server's\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = cli("serve", f"--port={port}", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"127.0.0.1:{port}" in proc.stderr and "--port" in proc.stderr
    assert "Traceback" not in proc.stderr and "AttributeError" not in proc.stderr
    assert token_file.read_text() == "the-running-server's\n"
    assert access({"action": "version"})["return"] == 0
