"""A threaded loopback HTTP server for tests: serves a directory, with scripted failures per path.

Use it as a context manager or as the ``http_server`` pytest fixture::

    from httpserver import serve, http_server  # (the fixture is registered by importing it)

    with serve(tmp_path) as server:
        url = server.put("files/model.onnx", b"...")      # write a file, get its URL
        server.behave("/files/model.onnx", cut=1)          # first answer sends half, then hangs up
        ...
        assert server.requests_for("/files/model.onnx")[1].range == "bytes=1234-"

Behaviours (keyword arguments of ``behave``; counters count down, then the file is served):
``status`` always answer this HTTP status; ``fail_then_ok`` answer ``fail_status`` (500) that many
times; ``cut`` send half the body then close the connection, that many times; ``stall`` seconds
to pause after half the body (``stall_times`` times), to trip a client's read timeout;
``wrong_bytes`` serve these bytes instead of the file; ``no_range`` ignore Range headers (200);
``delay`` seconds before answering; ``redirect`` answer 302 to this URL or path;
``headers`` extra response headers. Range requests (``bytes=N-`` and ``bytes=N-M``) get 206, or
416 with ``Content-Range: bytes */SIZE`` when N is past the end.
"""
from __future__ import annotations

import contextlib
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

import pytest

__all__ = ["Behaviour", "LoopbackServer", "Request", "serve", "http_server", "unused_url"]


@dataclass
class Behaviour:
    """What the server does for one path (mutable: the counters count down as requests arrive)."""

    status: int | None = None
    fail_then_ok: int = 0
    fail_status: int = 500
    cut: int = 0
    stall: float = 0.0
    stall_times: int = 1
    wrong_bytes: bytes | None = None
    no_range: bool = False
    delay: float = 0.0
    redirect: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """One request as the server saw it, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]
    status: int

    @property
    def range(self) -> str | None:
        """The Range header, if the client sent one."""
        for key, value in self.headers.items():
            if key.lower() == "range":
                return value
        return None


@dataclass(frozen=True)
class _Plan:
    status: int | None = None
    redirect: str | None = None
    cut: bool = False
    stall: float = 0.0
    wrong_bytes: bytes | None = None
    no_range: bool = False
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class LoopbackServer:
    """A directory served on 127.0.0.1 (a free port) by a threaded HTTP/1.1 server."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.requests: list[Request] = []
        self._behaviours: dict[str, Behaviour] = {}
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="loopback-http", daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The base URL, without a trailing slash: ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, path: str) -> str:
        """The URL of a path relative to the served directory."""
        return f"{self.url}/{path.lstrip('/')}"

    def put(self, path: str, data: bytes) -> str:
        """Write ``data`` to ``path`` under the served directory and return its URL."""
        file = self.directory / path.lstrip("/")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(data)
        return self.url_for(path)

    def behave(self, path: str, **settings: object) -> Behaviour:
        """Set the behaviour of a URL path (e.g. ``"/a/b.tar"``); replaces any earlier one."""
        behaviour = Behaviour(**settings)  # type: ignore[arg-type]
        with self._lock:
            self._behaviours["/" + path.lstrip("/")] = behaviour
        return behaviour

    def requests_for(self, path: str) -> list[Request]:
        """The logged requests for one URL path, in order."""
        path = "/" + path.lstrip("/")
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def start(self) -> "LoopbackServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # -- used by the handler

    def _plan(self, path: str) -> _Plan:
        """Decide the answer for one request and count the behaviour's counters down."""
        with self._lock:
            b = self._behaviours.get(path)
            if b is None:
                return _Plan()
            if b.redirect:
                return _Plan(redirect=b.redirect)
            if b.status is not None:
                return _Plan(status=b.status)
            if b.fail_then_ok > 0:
                b.fail_then_ok -= 1
                return _Plan(status=b.fail_status)
            cut = b.cut > 0
            if cut:
                b.cut -= 1
            stall = 0.0
            if b.stall and b.stall_times > 0:
                b.stall_times -= 1
                stall = b.stall
            return _Plan(
                cut=cut, stall=stall, wrong_bytes=b.wrong_bytes, no_range=b.no_range,
                delay=b.delay, headers=dict(b.headers),
            )

    def _log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _file(self, path: str) -> bytes | None:
        file = (self.directory / path.lstrip("/")).resolve()
        if not file.is_relative_to(self.directory) or not file.is_file():
            return None
        return file.read_bytes()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: LoopbackServer

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hang up on purpose in these tests (timeouts, cuts): stay quiet


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        owner = self.server.owner
        path = unquote(urlsplit(self.path).path)
        plan = owner._plan(path)
        if plan.delay:
            time.sleep(plan.delay)
        if plan.redirect:
            self._record(path, 302)
            self._empty(302, {"Location": plan.redirect})
            return
        if plan.status is not None:
            self._record(path, plan.status)
            self._empty(plan.status)
            return
        data = plan.wrong_bytes if plan.wrong_bytes is not None else owner._file(path)
        if data is None:
            self._record(path, 404)
            self._empty(404)
            return
        status, payload, headers = 200, data, dict(plan.headers)
        requested = None if plan.no_range else self.headers.get("Range")
        if requested:
            span = _parse_range(requested, len(data))
            if span == "unsatisfiable":
                self._record(path, 416)
                self._empty(416, {"Content-Range": f"bytes */{len(data)}"})
                return
            if span is not None:
                start, end = span
                status, payload = 206, data[start : end + 1]
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self._record(path, status)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "none" if plan.no_range else "bytes")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not send_body:
            return
        half = len(payload) // 2
        if plan.cut:
            self.wfile.write(payload[:half])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if plan.stall:
            self.wfile.write(payload[:half])
            self.wfile.flush()
            time.sleep(plan.stall)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.wfile.write(payload[half:])
            return
        self.wfile.write(payload)

    def _record(self, path: str, status: int) -> None:
        self.server.owner._log(Request(self.command, path, dict(self.headers.items()), status))

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        body = f"{status}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _parse_range(value: str, size: int) -> tuple[int, int] | str | None:
    """``bytes=N-`` / ``bytes=N-M`` -> (start, end inclusive); "unsatisfiable"; None to ignore."""
    unit, _, spec = value.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    if start >= size:
        return "unsatisfiable"
    end = min(int(last), size - 1) if last else size - 1
    return (start, end) if end >= start else None


@contextlib.contextmanager
def serve(directory: str | Path | None = None) -> Iterator[LoopbackServer]:
    """Serve ``directory`` (a fresh temporary one when None) on loopback for the ``with`` block."""
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="ckx-www-"))
        server = LoopbackServer(Path(directory)).start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackServer]:
    """A LoopbackServer over a fresh temporary directory, stopped after the test."""
    with serve(tmp_path_factory.mktemp("www")) as server:
        yield server


def unused_url(path: str = "/") -> str:
    """A loopback URL where nothing listens: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{path.lstrip('/')}"
