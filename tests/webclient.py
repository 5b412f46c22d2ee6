"""A keep-alive JSON client for `ckx serve`, and a fixture that starts API servers in threads on loopback."""
from __future__ import annotations

import http.client
import json
import threading

import pytest

from ckx.core.home import Home
from ckx.web.server import make_server

__all__ = ["Client", "start_server"]


class Client:
    """A keep-alive HTTP client for one server, sending its token unless told otherwise."""

    @classmethod
    def of(cls, server) -> "Client":
        return cls(server.server_address[1], token=server.token)

    def __init__(self, port: int, token: str | None = None) -> None:
        self.port = port
        self.token = token
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method: str, path: str, body: object = None, *, raw: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict, http.client.HTTPResponse]:
        all_headers = {"Content-Type": "application/json"} if (body is not None or raw is not None) else {}
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        all_headers.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        self.conn.request(method, path, body=data, headers=all_headers)
        response = self.conn.getresponse()
        payload = response.read()
        if response.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        return response.status, json.loads(payload), response

    def post(self, body: object, **kwargs) -> tuple[int, dict]:
        status, data, _ = self.request("POST", "/api", body, **kwargs)
        return status, data

    def get(self, path: str, **kwargs) -> tuple[int, dict]:
        status, data, _ = self.request("GET", path, **kwargs)
        return status, data

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def start_server(ckx_home):
    """Start servers in threads on port 0 (each with a random token); stop them after the test."""
    servers = []

    def start(**kwargs):
        server = make_server(home=Home(ckx_home), host="127.0.0.1", port=0, **kwargs)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, thread))
        return server

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
