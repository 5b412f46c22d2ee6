"""`ckx serve`: the access() actions as a JSON web API, in one threaded process (no subprocess per request).

Endpoints
    ``POST /api``            a JSON object ``{"action": ..., ...}`` as access() takes it
    ``GET  /api?action=...`` the same for read-only actions, inputs as query parameters
    ``GET  /api/jobs/<id>``  status (and, when finished, the result) of a long action
    ``GET  /api/jobs``       every job this server still remembers
    ``GET  /openapi.json``   an OpenAPI 3 description of the above

Results are access()'s dicts. HTTP status from ``"return"``: 0 -> 200, 2 -> 400, 3 -> 404,
5 -> 422, any other -> 500; long actions (install, run, benchmark, pull, unzip, ...) answer
202 with a job id. Only the actions in WEB_ACTIONS are reachable.

Safety: loopback by default; any other address needs a token (``Authorization: Bearer T``,
else 401). POST bodies must be ``application/json`` (a browser cannot send that cross-site
without a CORS preflight, which this server never grants) and at most ``max_body`` bytes (413).
Without a token the Host header must name a loopback host (no DNS rebinding).
"""
from __future__ import annotations

import hmac
import json
import logging
import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from ckx import __version__
from ckx.core.errors import CkxError, UsageError
from ckx.core.home import Home
from ckx.store.context import Context
from ckx.web.jobs import JOB_WORKERS, ContextPool, JobManager, call_action
from ckx.web.openapi import openapi_spec
from ckx.web.policy import WebError, check_request, http_status, is_loopback, query_to_request

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3344  # CK's web service port
MAX_BODY = 1 << 20
TOKEN_ENV = "CKX_SERVE_TOKEN"


class ApiServer(ThreadingHTTPServer):
    """The ckx web API on one socket: request threads share a ContextPool and a JobManager."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog: bursts of clients must not wait for SYN retries

    def __init__(self, address: tuple[str, int], *, home: Home, token: str | None = None,
                 max_body: int = MAX_BODY, refresh_interval: float = 1.0, job_workers: int = JOB_WORKERS) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.home = home
        self.token = token or None
        self.max_body = max_body
        self.contexts = ContextPool(home, refresh_interval=refresh_interval)
        self.jobs = JobManager(self.contexts, workers=job_workers)
        self.loopback = is_loopback(address[0])
        self._spec: dict | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    def spec(self) -> dict:
        if self._spec is None:
            self._spec = openapi_spec(token_required=self.token is not None)
        return self._spec

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up or stalls is routine; anything else is logged with its traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            log.debug("connection from %s ended: %s", client_address, error)
            return
        log.exception("error while serving %s", client_address)

    def server_close(self) -> None:
        super().server_close()
        self.jobs.shutdown()
        self.contexts.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ApiServer
    server_version = f"ckx/{__version__}"
    # Headers and body leave in one segment, at once: no Nagle / delayed-ACK stall on keep-alive connections.
    wbufsize = -1
    disable_nagle_algorithm = True
    timeout = 60  # seconds a connection may stay idle or stall mid-request

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- verbs ---------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._not_allowed()

    def do_DELETE(self) -> None:
        self._not_allowed()

    def do_PATCH(self) -> None:
        self._not_allowed()

    def do_HEAD(self) -> None:
        self._not_allowed()

    def do_OPTIONS(self) -> None:  # no CORS preflight is ever granted
        self._not_allowed()

    def _not_allowed(self) -> None:
        self._discard_body()
        self._send(405, {"return": 2, "error": f"{self.command} is not supported"}, {"Allow": "GET, POST"})

    # -- the one path every request takes -------------------------------------------------------
    def _handle(self, method: str) -> None:
        try:
            self._authorise()
            parts = urlsplit(self.path)
            path = parts.path.rstrip("/") or "/"
            if method == "POST":
                if path != "/api":
                    self._discard_body()
                    raise WebError(404, f"no such endpoint: POST {parts.path}", code=3)
                self._api(self._read_json(), "POST")
            elif path == "/api":
                self._api(query_to_request(parts.query), "GET")
            elif path == "/api/jobs":
                self._send(200, {"return": 0, "jobs": self.server.jobs.summaries()})
            elif path.startswith("/api/jobs/"):
                job = self.server.jobs.get(path[len("/api/jobs/"):])
                if job is None:
                    raise WebError(404, "no such job (unknown id, or forgotten)", code=3)
                self._send(200, job)
            elif path == "/openapi.json":
                self._send(200, self.server.spec())
            elif path == "/":
                self._send(200, {"return": 0, "service": "ckx", "version": __version__, "api": "/api",
                                 "openapi": "/openapi.json"})
            else:
                raise WebError(404, f"no such endpoint: {method} {parts.path}", code=3)
        except WebError as exc:
            self._send(exc.status, exc.to_dict(), exc.headers)
        except Exception as exc:  # a bug: answer 500 and keep serving
            log.exception("request %s %s failed", method, self.path)
            self._send(500, {"return": 1, "error": f"internal error: {type(exc).__name__}: {exc}"})

    def _authorise(self) -> None:
        token = self.server.token
        if token is None:
            host = self.headers.get("Host")
            if host is not None and not is_loopback(urlsplit(f"//{host}").hostname or ""):
                self._discard_body()
                raise WebError(403, f"Host {host!r} is not a loopback name", hint="this server only answers to localhost")
            return
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            self._discard_body()
            raise WebError(401, "missing or wrong token", hint="send the header 'Authorization: Bearer TOKEN'",
                           headers={"WWW-Authenticate": 'Bearer realm="ckx"'})

    def _discard_body(self) -> None:
        """Drop a body we will not read; a large or unknown one closes the connection instead."""
        length = self.headers.get("Content-Length")
        if length is None:
            return
        try:
            size = int(length)
        except ValueError:
            size = -1
        if 0 <= size <= self.server.max_body:
            self.rfile.read(size)
        else:
            self.close_connection = True

    def _read_json(self) -> dict:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise WebError(411, "chunked bodies are not accepted; send Content-Length")
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self.close_connection = True
            raise WebError(411, "a POST needs a Content-Length header")
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise WebError(400, f"invalid Content-Length {length_text!r}") from None
        if length > self.server.max_body:
            self.close_connection = True
            raise WebError(413, f"request body of {length} bytes is larger than the limit of {self.server.max_body}")
        body = self.rfile.read(length)
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise WebError(415, f"POST bodies must be application/json, not {content_type or 'untyped'}",
                           hint="send the header 'Content-Type: application/json'")
        try:
            request = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise WebError(400, "invalid JSON body: not UTF-8") from None
        except json.JSONDecodeError as exc:
            raise WebError(400, f"invalid JSON body: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        if not isinstance(request, dict):
            raise WebError(400, f"the JSON body must be an object, not {type(request).__name__}")
        return request

    def _api(self, request: dict, method: str) -> None:
        inp, action = check_request(request, method=method)
        if action.long:
            job = self.server.jobs.submit(inp, action)
            self._send(202, {"return": 0, "job": job.id, "status": job.status, "href": f"/api/jobs/{job.id}"},
                       {"Location": f"/api/jobs/{job.id}"})
            return
        with self.server.contexts.borrow() as ctx:
            result = call_action(ctx, inp)
        if not action.read_only:
            self.server.contexts.invalidate()
        self._send(http_status(result), result)

    def _send(self, status: int, data: dict, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data, sort_keys=True, default=str).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


# =========================================================================== making and running one


def make_server(*, home: Home, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None,
                max_body: int = MAX_BODY, refresh_interval: float = 1.0, job_workers: int = JOB_WORKERS) -> ApiServer:
    """Bind the web API to ``host:port`` (port 0: any free port) without serving yet.

    Raises UsageError for a non-loopback host without a token, or a bad argument; CkxError when the
    address cannot be bound.
    """
    if not is_loopback(host) and not token:
        raise UsageError(
            f"refusing to listen on {host} without a token",
            hint=f"pass --token=SECRET (or set {TOKEN_ENV}); clients then send 'Authorization: Bearer SECRET'",
        )
    if max_body < 1:
        raise UsageError("--max_body must be positive")
    try:
        return ApiServer((host, port), home=home, token=token, max_body=max_body, refresh_interval=refresh_interval,
                         job_workers=job_workers)
    except OSError as exc:
        raise CkxError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                       hint="choose another --port, or stop what listens there") from None


def action_serve(ctx: Context, inp: dict) -> dict:
    """``ckx serve [--host=127.0.0.1] [--port=3344] [--token=T] [--max_body=BYTES] [--refresh_interval=S]``.

    Serves until interrupted. The token may also come from $CKX_SERVE_TOKEN. ``inp`` holds the typed options
    the action table declares.
    """
    port = inp.get("port")
    refresh = inp.get("refresh_interval")
    server = make_server(home=ctx.home, host=inp.get("host") or DEFAULT_HOST, port=DEFAULT_PORT if port is None else port,
                         token=inp.get("token") or os.environ.get(TOKEN_ENV) or None,
                         max_body=inp.get("max_body") or MAX_BODY, refresh_interval=1.0 if refresh is None else refresh,
                         job_workers=inp.get("job_workers") or JOB_WORKERS)
    ctx.info(f"serving the ckx API on {server.url}/api (OpenAPI: {server.url}/openapi.json)"
             + ("; token required" if server.token else "") + "; Ctrl-C stops")
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return {"return": 0, "url": server.url, "text": "stopped"}


__all__ = ["ApiServer", "DEFAULT_HOST", "DEFAULT_PORT", "MAX_BODY", "TOKEN_ENV", "action_serve", "make_server"]
