"""`ckx serve`: the access() actions as a JSON web API, in one process on a bounded pool of threads.

Endpoints
    ``POST /api``            a JSON object ``{"action": ..., ...}`` as access() takes it
    ``GET  /api?action=...`` the same for read-only actions, inputs as query parameters
    ``GET  /api/jobs/<id>``  status (and, when finished, the result) of a long action
    ``GET  /api/jobs``       every job this server still remembers
    ``GET  /openapi.json``   an OpenAPI 3 description of the above

Results are access()'s dicts. HTTP status from ``"return"``: 0 -> 200, 2 -> 400, 3 -> 404,
5 -> 422, any other -> 500; long actions (install, run, benchmark, pull, unzip, ...) answer
202 with a job id. Only the actions in WEB_ACTIONS are reachable.

Safety: every request needs the server's token (``Authorization: Bearer T``, or the cookie a
browser gets from opening ``/?token=T`` once), else 401. Actions that run code or change files
need ``--allow_writes`` (else 403); inputs naming server paths are refused (400). POST bodies must
be ``application/json`` (a browser cannot send that cross-site without a CORS preflight, which this
server never grants). Bounds from ckx.core.limits: body size (413), URL (414), headers (431), the
time a request may take to arrive (408), request threads; every error is a JSON object.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
from urllib.parse import parse_qsl, urlencode, urlsplit

from ckx import __version__
from ckx.core.errors import UsageError
from ckx.core.home import Home
from ckx.core.limits import Limits
from ckx.store.context import Context
from ckx.web.connection import BoundedHTTPServer, JsonHandler
from ckx.web.jobs import JOB_WORKERS, ContextPool, JobManager, call_action
from ckx.web.openapi import openapi_spec
from ckx.web.policy import WebError, check_request, http_status, is_loopback, query_to_request
from ckx.web.token import TOKEN_ENV, TOKEN_FILE, choose_token, forget_token, store_token, token_matches

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3344  # CK's web service port
_STRINGS_AND_BRACKETS = re.compile(rb'(?P<key>"(?:[^"\\]|\\.)*"\s*:)|"(?:[^"\\]|\\.)*"|[\[\]{}]')


class ApiHandler(JsonHandler):
    """One connection's requests: authorise, route, police the input, run the action, answer JSON."""

    server: ApiServer
    server_version = f"ckx/{__version__}"

    # -- verbs ---------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_OPTIONS(self) -> None:  # no CORS preflight is ever granted
        self._handle("OPTIONS")

    # -- the one path every request takes -------------------------------------------------------
    def _handle(self, method: str) -> None:
        extra: dict[str, str] = {}
        try:
            parts = urlsplit(self.path)
            query = parse_qsl(parts.query, keep_blank_values=True)
            if self.authorise(method, query):
                extra["Set-Cookie"] = f"{self.server.cookie}={self.server.token}; HttpOnly; SameSite=Strict; Path=/"
            query_text = urlencode([(k, v) for k, v in query if k != "token"])
            path = parts.path.rstrip("/") or "/"
            if method not in ("GET", "POST"):
                self._discard_body()
                raise WebError(405, f"{method} is not supported", headers={"Allow": "GET, POST"})
            if method == "POST":
                if path != "/api":
                    self._discard_body()
                    raise WebError(404, f"no such endpoint: POST {parts.path}", code=3)
                request = self._read_json()
                self.reader.end(self.server.limits.request_timeout_s)
                self._api(request, "POST")
                return
            self.reader.end(self.server.limits.request_timeout_s)
            if path == "/api":
                self._api(query_to_request(query_text), "GET", extra)
            elif path == "/api/jobs":
                self.send_json(200, {"return": 0, "jobs": self.server.jobs.summaries()}, extra)
            elif path.startswith("/api/jobs/"):
                job = self.server.jobs.get(path[len("/api/jobs/"):])
                if job is None:
                    raise WebError(404, "no such job (unknown id, or forgotten)", code=3)
                self.send_json(200, job, extra)
            elif path == "/openapi.json":
                self.send_json(200, self.server.spec(), extra)
            elif path == "/":
                self.send_json(200, {"return": 0, "service": "ckx", "version": __version__, "api": "/api",
                                     "openapi": "/openapi.json", "allow_writes": self.server.allow_writes}, extra)
            else:
                raise WebError(404, f"no such endpoint: {method} {parts.path}", code=3)
        except WebError as exc:
            self.send_json(exc.status, exc.to_dict(), {**extra, **exc.headers})
        except TimeoutError:
            self.request_timed_out()
        except Exception as exc:  # a bug: answer 500 and keep serving
            log.exception("request %s %s failed", method, self.path)
            self.send_json(500, {"return": 1, "error": f"internal error: {type(exc).__name__}: {exc}",
                                 "error_type": "InternalError"})

    def authorise(self, method: str, query: list[tuple[str, str]]) -> bool:
        """Pass a request that carries the token; True when it came in the URL (the answer sets the cookie).

        Raises WebError 401 otherwise, and 403 for a foreign Host header on a loopback server (DNS rebinding).
        """
        if self.server.loopback:
            host = self.headers.get("Host")
            if host is not None and not is_loopback(_hostname(host)):
                self._refuse_body()
                raise WebError(403, f"Host {host!r} is not a loopback name", hint="this server only answers to localhost")
        token = self.server.token
        scheme, _, given = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token_matches(given.strip(), token):
            return False
        if token_matches(_cookie(self.headers.get_all("Cookie") or [], self.server.cookie), token):
            return False
        if method == "GET" and token_matches(next((v for k, v in query if k == "token"), None), token):
            return True
        self._refuse_body()
        raise WebError(401, "missing or wrong token",
                       hint="send the header 'Authorization: Bearer TOKEN'; the token is in $CKX_HOME/serve-token "
                            "and in the URL 'ckx serve' printed",
                       headers={"WWW-Authenticate": 'Bearer realm="ckx"'})

    def _refuse_body(self) -> None:
        """A request refused before its body is read: do not read it, close after the answer."""
        if self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self.linger = True

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
            self.linger = True

    def _read_json(self) -> dict:
        if self.headers.get("Transfer-Encoding"):
            self._refuse_body()
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
            self._refuse_body()
            raise WebError(400, f"invalid Content-Length {length_text!r}") from None
        if length > self.server.max_body:
            self._refuse_body()
            raise WebError(413, f"request body of {length} bytes is larger than the limit of {self.server.max_body}",
                           hint="raise 'limits.request_max_bytes' in $CKX_HOME/settings.json, or --max_body")
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            raise WebError(400, f"the body ended after {len(body)} of {length} bytes")
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise WebError(415, f"POST bodies must be application/json, not {content_type or 'untyped'}",
                           hint="send the header 'Content-Type: application/json'")
        return parse_body(body, self.server.limits)

    def _api(self, request: dict, method: str, headers: dict[str, str] | None = None) -> None:
        inp, action = check_request(request, method=method, allow_writes=self.server.allow_writes,
                                    limits=self.server.limits)
        if action.long:
            job = self.server.jobs.submit(inp, action)
            self.send_json(202, {"return": 0, "job": job.id, "status": job.status, "href": f"/api/jobs/{job.id}"},
                           {**(headers or {}), "Location": f"/api/jobs/{job.id}"})
            return
        with self.server.contexts.borrow() as ctx:
            result = call_action(ctx, inp)
        if not action.read_only:
            self.server.contexts.invalidate()
        self.send_json(http_status(result), result, headers)


class ApiServer(BoundedHTTPServer):
    """The ckx web API on one socket: request threads share a ContextPool and a JobManager.

    ``token`` is required on every request; without ``allow_writes`` only read-only actions run.
    ``handler_class`` answers the requests (benchmarks/server.py swaps it to measure what checks cost).
    """

    handler_class: type[JsonHandler] = ApiHandler

    def __init__(self, address: tuple[str, int], *, home: Home, token: str, allow_writes: bool = False,
                 limits: Limits | None = None, max_body: int | None = None, refresh_interval: float = 1.0,
                 job_workers: int = JOB_WORKERS, workers: int | None = None) -> None:
        limits = limits or Limits.from_settings(home.settings_path)
        self.home = home
        self.token = token
        self.allow_writes = allow_writes
        self.max_body = max_body or limits.request_max_bytes
        self.loopback = is_loopback(address[0])
        self._spec: dict | None = None
        super().__init__(address, self.handler_class, limits=limits, workers=workers)
        # Made once the socket is bound: a busy port leaves nothing to close.
        self.contexts = ContextPool(home, refresh_interval=refresh_interval)
        self.jobs = JobManager(self.contexts, workers=job_workers)
        self.cookie = f"ckx-token-{self.server_address[1]}"  # cookies ignore ports: one name per server

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    @property
    def login_url(self) -> str:
        """The URL to open once in a browser: it carries the token, the answer sets the cookie."""
        return f"{self.url}/?{urlencode({'token': self.token})}"

    def spec(self) -> dict:
        if self._spec is None:
            self._spec = openapi_spec(allow_writes=self.allow_writes)
        return self._spec

    def server_close(self) -> None:
        super().server_close()
        if hasattr(self, "jobs"):
            self.jobs.shutdown()
            self.contexts.close()


def _hostname(host: str) -> str:
    """The host name of a Host header (``127.0.0.1:3344`` -> ``127.0.0.1``); empty when it does not parse."""
    try:
        return urlsplit(f"//{host}").hostname or ""
    except ValueError:
        return ""


def _cookie(lines: list[str], name: str) -> str | None:
    """The value of cookie ``name`` in the Cookie header lines, or None."""
    for line in lines:
        for part in line.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
    return None


def parse_body(body: bytes, limits: Limits) -> dict:
    """The JSON object in ``body``; WebError 400 for invalid JSON, another type, or nesting deeper than Python parses.

    Nesting within the interpreter's reach but deeper than ``limits.request_max_depth`` is check_request's.
    """
    try:
        request = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise WebError(400, "invalid JSON body: not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise WebError(400, f"invalid JSON body: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # deeper than the interpreter parses: find the field without parsing
        field = _deep_field(body, limits.request_max_depth)
        raise WebError(400, f"field {field!r} is nested more than {limits.request_max_depth} levels deep"
                       if field else f"the JSON body is nested more than {limits.request_max_depth} levels deep") from None
    if not isinstance(request, dict):
        raise WebError(400, f"the JSON body must be an object, not {type(request).__name__}")
    return request


def _deep_field(body: bytes, limit: int) -> str | None:
    """The top-level key under which ``body`` first nests deeper than ``limit`` (strings skipped), or None."""
    depth = 0
    key: str | None = None
    for match in _STRINGS_AND_BRACKETS.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return key
        elif token in (b"]", b"}"):
            depth -= 1
        elif match.group("key") is not None and depth == 1:
            try:
                key = json.loads(token.rstrip()[:-1].rstrip())
            except ValueError:
                key = None
    return None


# =========================================================================== making and running one


def make_server(*, home: Home, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None,
                allow_writes: bool = False, limits: Limits | None = None, max_body: int | None = None,
                refresh_interval: float = 1.0, job_workers: int = JOB_WORKERS, workers: int | None = None) -> ApiServer:
    """Bind the web API to ``host:port`` (port 0: any free port) without serving yet.

    ``token`` None makes a random one (``server.token``). ``limits`` default to those of
    $CKX_HOME/settings.json. Raises UsageError for a bad argument or an address that cannot be bound
    (a busy port names it and suggests --port).
    """
    if max_body is not None and max_body < 1:
        raise UsageError("--max_body must be positive")
    if workers is not None and workers < 1:
        raise UsageError("--workers must be positive")
    try:
        return ApiServer((host, port), home=home, token=choose_token(token), allow_writes=allow_writes, limits=limits,
                         max_body=max_body, refresh_interval=refresh_interval, job_workers=job_workers, workers=workers)
    except OSError as exc:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        busy = exc.errno in (errno.EADDRINUSE, errno.EACCES)
        raise UsageError(f"cannot listen on {where}: {exc.strerror or exc}",
                         hint=("another program listens there: choose another --port (--port=0 picks a free one)"
                               if busy else "check --host and --port")) from None


def action_serve(ctx: Context, inp: dict) -> dict:
    """``ckx serve [--host=127.0.0.1] [--port=3344] [--token=T] [--allow_writes] [--workers=N] [--max_body=BYTES]``.

    Serves until interrupted. The token comes from --token, else $CKX_SERVE_TOKEN, else is made at random;
    it is written to $CKX_HOME/serve-token (mode 0600) and printed once in the URL to open. ``inp``
    holds the typed options the action table declares.
    """
    port = inp.get("port")
    refresh = inp.get("refresh_interval")
    server = make_server(home=ctx.home, host=inp.get("host") or DEFAULT_HOST, port=DEFAULT_PORT if port is None else port,
                         token=inp.get("token") or os.environ.get(TOKEN_ENV) or None,
                         allow_writes=bool(inp.get("allow_writes")), max_body=inp.get("max_body"),
                         refresh_interval=1.0 if refresh is None else refresh,
                         job_workers=inp.get("job_workers") or JOB_WORKERS, workers=inp.get("workers"))
    token_path = ctx.home.root / TOKEN_FILE
    try:
        store_token(token_path, server.token)
        ctx.info(f"serving the ckx API on {server.url}/api (OpenAPI: {server.url}/openapi.json); "
                 + ("actions that write are allowed" if server.allow_writes else "read-only (no --allow_writes)")
                 + f"; Ctrl-C stops\nthe token is in {token_path}; open {server.login_url}")
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        forget_token(token_path, server.token)
    return {"return": 0, "url": server.url, "text": "stopped"}


__all__ = ["ApiHandler", "ApiServer", "DEFAULT_HOST", "DEFAULT_PORT", "TOKEN_ENV", "action_serve", "make_server", "parse_body"]
