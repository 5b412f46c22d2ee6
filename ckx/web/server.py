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

import concurrent.futures
import contextlib
import datetime as _dt
import hmac
import ipaddress
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlsplit

from ckx import __version__
from ckx.api import ACTION_ALIASES, ACTIONS, Action, access, lookup, normalise
from ckx.core.cid import Cid
from ckx.core.report import Reporter
from ckx.store.context import Context
from ckx.core.errors import CkxError, UsageError
from ckx.core.inputs import as_int
from ckx.core.home import Home

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3344  # CK's web service port
MAX_BODY = 1 << 20
TOKEN_ENV = "CKX_SERVE_TOKEN"
JOBS_KEPT = 200
JOB_WORKERS = 2

# The actions reachable over the web, as (name, module) keys of ckx.api.ACTIONS. Left out on purpose:
# serve itself, zip (writes an archive wherever it is told), dashboard (writes files, may serve),
# virtual env and activate/create/rm venv (spawn shells or build environments); REFUSED_INPUTS below
# refuses `rm repo --all` and `export experiment --out=FILE`.
WEB_ACTIONS: frozenset[tuple[str, str | None]] = frozenset({
    ("add", None), ("load", None), ("find", None), ("search", None), ("list", None), ("rm", None),
    ("ren", None), ("cp", None), ("list_tags", None), ("path", None),
    ("add", "repo"), ("list", "repo"), ("rm", "repo"), ("pull", "repo"), ("unzip", "repo"),
    ("detect", "soft"), ("detect", "platform"), ("install", "package"), ("show", "env"), ("rm", "env"),
    ("list", "venv"),
    ("run", "program"), ("benchmark", "program"),
    ("show", "experiment"), ("replay", "experiment"), ("export", "experiment"),
    ("version", None), ("help", None), ("uid", None), ("reindex", None),
})

# Inputs refused even on reachable actions: they delete or write files outside the repos.
REFUSED_INPUTS: dict[tuple[str, str | None], dict[str, str]] = {
    ("rm", "repo"): {"all": "deleting a repo's files"},
    ("export", "experiment"): {"out": "writing a file on the server"},
}

STATUS_BY_RETURN = {0: 200, 2: 400, 3: 404, 5: 422}
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
_CID_KEYS = ("module", "entry", "repo", "cid")


def http_status(result: dict) -> int:
    """The HTTP status of an access() result: 0 -> 200, 2 -> 400, 3 -> 404, 5 -> 422, others 500."""
    code = result.get("return", 0)
    return STATUS_BY_RETURN.get(code, 500) if isinstance(code, int) else 500


def web_actions() -> list[Action]:
    """The Action objects reachable over the web, in ACTIONS order."""
    return [a for a in ACTIONS if (a.name, a.module) in WEB_ACTIONS]


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebError(Exception):
    """A request the web layer refuses before any action runs: an HTTP status and a message."""

    def __init__(self, status: int, message: str, *, code: int = 2, hint: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.hint = hint
        self.headers = headers or {}

    def to_dict(self) -> dict:
        data: dict[str, Any] = {"return": self.code, "error": self.message, "error_type": "WebError"}
        if self.hint:
            data["hint"] = self.hint
        return data


# =========================================================================== contexts and jobs


class _Pooled:
    __slots__ = ("ctx", "generation", "checked")

    def __init__(self, ctx: Context, generation: int) -> None:
        self.ctx = ctx
        self.generation = generation
        self.checked = time.monotonic()


class ContextPool:
    """Contexts for request threads: each one is used by one thread at a time and reused afterwards.

    A reused context re-reads the registry and re-checks the disk when this server changed
    something (``invalidate``) or when it is older than ``refresh_interval`` seconds, so changes made
    by other processes show within that interval (0: on every request).
    """

    def __init__(self, home: Home, *, refresh_interval: float = 1.0, keep: int = 16) -> None:
        self.home = home
        self.refresh_interval = refresh_interval
        self.keep = keep
        self._idle: list[_Pooled] = []
        self._lock = threading.Lock()
        self._generation = 0

    def invalidate(self) -> None:
        """Something was written: every context re-reads the registry and index before its next use."""
        with self._lock:
            self._generation += 1

    def new_context(self) -> Context:
        """A fresh non-interactive context on this pool's home."""
        return Context(self.home, reporter=Reporter(), quiet=True, interactive=False)

    @contextlib.contextmanager
    def borrow(self) -> Iterator[Context]:
        """A context for one request, with a fresh reporter."""
        with self._lock:
            pooled = self._idle.pop() if self._idle else None
            generation = self._generation
        if pooled is None:
            pooled = _Pooled(self.new_context(), generation)
        elif pooled.generation != generation:
            pooled.ctx.forget_registry()  # this server wrote something: start from the registry
            pooled.generation = generation
            pooled.checked = time.monotonic()
        elif time.monotonic() - pooled.checked >= self.refresh_interval:
            pooled.ctx.expire()  # others may have written: re-check the disk, keep the connection
            pooled.checked = time.monotonic()
        pooled.ctx.reporter = Reporter()
        try:
            yield pooled.ctx
        except BaseException:
            pooled.ctx.close()
            raise
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(pooled)
                return
        pooled.ctx.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for pooled in idle:
            pooled.ctx.close()


@dataclass
class Job:
    """A long action run in the background. Mutable: the worker updates it under the manager's lock."""

    id: str
    action: str
    module: str | None
    created: str
    status: str = "queued"  # queued, running, done, failed
    started: str | None = None
    finished: str | None = None
    result: dict | None = None

    def to_dict(self) -> dict:
        data: dict[str, Any] = {"return": 0, "job": self.id, "action": self.action, "module": self.module,
                                "status": self.status, "created": self.created}
        for key in ("started", "finished"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        if self.result is not None:
            data["result"] = self.result
            data["http_status"] = http_status(self.result)
        return data


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


class JobManager:
    """Runs long actions on a small thread pool; remembers the last ``keep`` jobs."""

    def __init__(self, pool: ContextPool, *, workers: int = JOB_WORKERS, keep: int = JOBS_KEPT) -> None:
        self.pool = pool
        self.keep = keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ckx-job")

    def submit(self, request: dict, action: Action) -> Job:
        """Queue ``request`` (already checked) and return its job."""
        job = Job(secrets.token_hex(8), action.name, action.module, _now())
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self.keep:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].status in ("queued", "running"):
                    break
                del self._jobs[oldest]
        self._executor.submit(self._run, job, dict(request))
        return job

    def _run(self, job: Job, request: dict) -> None:
        with self._lock:
            job.status, job.started = "running", _now()
        ctx = self.pool.new_context()
        try:
            result = _call(ctx, request)
        finally:
            ctx.close()
            self.pool.invalidate()
        with self._lock:
            job.result = result
            job.finished = _now()
            job.status = "done" if result.get("return") == 0 else "failed"

    def get(self, job_id: str) -> dict | None:
        """A job's state as JSON, or None when this server does not know it."""
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else job.to_dict()

    def summaries(self) -> list[dict]:
        """Every remembered job, oldest first, without results."""
        with self._lock:
            return [{k: v for k, v in job.to_dict().items() if k != "result"} for job in self._jobs.values()]

    def shutdown(self, *, wait: bool = False) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=True)


def _call(ctx: Context, request: dict) -> dict:
    """access() on a borrowed context, with the reporter's messages; a bug becomes a 500 result."""
    try:
        result = access(request, context=ctx)
    except Exception as exc:  # a bug in an action: answer it, keep serving
        log.exception("action %s failed", request.get("action"))
        return {"return": 1, "error": f"internal error: {type(exc).__name__}: {exc}", "error_type": "InternalError"}
    if ctx.reporter.messages:
        result.setdefault("messages", list(ctx.reporter.messages))
    return result


# =========================================================================== requests


def check_request(request: dict, *, method: str) -> tuple[dict, Action]:
    """Normalise and police one request: (input, action), or WebError with the HTTP status."""
    name = request.get("action")
    if not isinstance(name, str) or not name:
        raise WebError(400, "the request has no 'action'", hint="send {\"action\": \"search\", ...}; GET /openapi.json describes the API")
    if ACTION_ALIASES.get(name, name) not in {a.name for a in ACTIONS}:
        raise WebError(404, f"unknown action {name!r}", hint="GET /openapi.json lists the actions")
    try:
        inp = normalise(request)
        for key in _CID_KEYS:
            value = request.get(key)
            if value is not None and (not isinstance(value, str) or "/" in value or "\\" in value or ".." in value.split(":")):
                raise UsageError(f"invalid {key} {value!r}: path separators and '..' are not allowed")
        cids = inp.get("cids", [])
        if not isinstance(cids, list) or not all(isinstance(c, str) for c in cids):
            raise UsageError("'cids' must be a list of strings")
        for text in cids:
            Cid.parse(text)
        action = lookup(inp["action"], inp.get("module"))
    except CkxError as exc:
        raise WebError(400, exc.message, hint=exc.hint) from None
    if (action.name, action.module) not in WEB_ACTIONS:
        where = f" {action.module}" if action.module else ""
        raise WebError(403, f"'{action.name}{where}' is not available over the web API", code=2,
                       hint="run it with the ckx command line")
    for key, why in REFUSED_INPUTS.get((action.name, action.module), {}).items():
        if inp.get(key):
            where = f" {action.module}" if action.module else ""
            raise WebError(403, f"'{action.name}{where} --{key}' ({why}) is not available over the web API", code=2,
                           hint="leave it out, or use the ckx command line")
    if method == "GET" and not action.read_only:
        raise WebError(405, f"'{action.name}' changes things: use POST", headers={"Allow": "POST"})
    inp["quiet"] = True
    return inp, action


def _query_to_request(query: str) -> dict:
    from ckx.core.inputs import set_dotted

    request: dict[str, Any] = {}
    try:
        for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
            flag = value == "" and key not in ("action", "module", "entry", "repo", "cid", "tags")
            set_dotted(request, key, True if flag else value)
    except UsageError as exc:
        raise WebError(400, exc.message) from None
    return request


class ApiServer(ThreadingHTTPServer):
    """The ckx web API on one socket: request threads share a ContextPool and a JobManager."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog: bursts of clients must not wait for SYN retries

    def __init__(self, address: tuple[str, int], *, home: Home, token: str | None = None,
                 max_body: int = MAX_BODY, refresh_interval: float = 1.0, job_workers: int = JOB_WORKERS) -> None:
        if ":" in address[0]:
            import socket

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
                self._api(_query_to_request(parts.query), "GET")
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
            result = _call(ctx, inp)
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

    Serves until interrupted. The token may also come from $CKX_SERVE_TOKEN.
    """
    host = str(inp.get("host") or DEFAULT_HOST)
    port = as_int(inp.get("port"), "port", DEFAULT_PORT, minimum=0)
    if port > 65535:
        raise UsageError("--port must be at most 65535")
    token = inp.get("token") or os.environ.get(TOKEN_ENV) or None
    if token is True:
        raise UsageError("--token needs a value: --token=SECRET")
    try:
        refresh = float(inp.get("refresh_interval", 1.0))
    except (TypeError, ValueError):
        raise UsageError("--refresh_interval must be a number of seconds") from None
    server = make_server(home=ctx.home, host=host, port=port, token=str(token) if token else None,
                         max_body=as_int(inp.get("max_body"), "max_body", MAX_BODY), refresh_interval=max(0.0, refresh),
                         job_workers=as_int(inp.get("job_workers"), "job_workers", JOB_WORKERS))
    ctx.info(f"serving the ckx API on {server.url}/api (OpenAPI: {server.url}/openapi.json)"
             + ("; token required" if server.token else "") + "; Ctrl-C stops")
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return {"return": 0, "url": server.url, "text": "stopped"}


# =========================================================================== OpenAPI


def openapi_spec(*, token_required: bool = False) -> dict:
    """The OpenAPI 3.0 description of this web API (actions enumerated from WEB_ACTIONS)."""
    actions = web_actions()
    names = sorted({a.name for a in actions})
    read_only = sorted({a.name for a in actions if a.read_only})
    long_names = sorted({a.name for a in actions if a.long})
    listing = "\n".join(f"- `{a.name}{' ' + a.module if a.module else ''}`: {a.summary}"
                        f"{' (job)' if a.long else ''}{' (GET allowed)' if a.read_only else ''}" for a in actions)

    def ref(name: str) -> dict:
        return {"$ref": f"#/components/schemas/{name}"}

    def answer(description: str, schema: str = "Result") -> dict:
        return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}

    errors = {
        "400": answer("bad input: invalid JSON, a bad CID (`../`), or the action's return 2", "Error"),
        "403": answer("an action not offered over the web, or a non-loopback Host without a token", "Error"),
        "404": answer("unknown action, or the action's return 3 (not found, ambiguous)", "Error"),
        "422": answer("the action's return 5 (integrity: checksum, unsafe archive)", "Error"),
        "500": answer("any other non-zero return", "Error"),
    }
    if token_required:
        errors["401"] = answer("missing or wrong bearer token", "Error")
    query_params = [
        {"name": "action", "in": "query", "required": True, "schema": {"type": "string", "enum": read_only}},
        *({"name": key, "in": "query", "required": False, "schema": {"type": "string"}}
          for key in ("module", "entry", "repo", "cid", "tags", "search_string")),
    ]
    spec: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "ckx web API",
            "version": __version__,
            "description": ("The ckx actions as JSON. A request is what `ckx.access()` takes; a result is what it "
                            "returns. HTTP status from `return`: 0 -> 200, 2 -> 400, 3 -> 404, 5 -> 422, others -> "
                            "500. Long actions answer 202 with a job to poll.\n\nActions:\n" + listing),
        },
        "paths": {
            "/api": {
                "get": {
                    "summary": "Run a read-only action; inputs as query parameters (dotted keys nest)",
                    "operationId": "getAction",
                    "parameters": query_params,
                    "responses": {"200": answer("the action's result"), "405": answer("the action is not read-only", "Error"),
                                  **errors},
                },
                "post": {
                    "summary": "Run an action",
                    "operationId": "postAction",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": ref("Request")}}},
                    "responses": {
                        "200": answer("the action's result"),
                        "202": answer("a long action was queued as a job", "JobAccepted"),
                        "411": answer("no Content-Length", "Error"),
                        "413": answer("the body is larger than the server's limit", "Error"),
                        "415": answer("the body is not application/json", "Error"),
                        **errors,
                    },
                },
            },
            "/api/jobs": {
                "get": {"summary": "The jobs this server remembers", "operationId": "listJobs",
                        "responses": {"200": answer("jobs, without their results", "JobList")}},
            },
            "/api/jobs/{job_id}": {
                "get": {
                    "summary": "A job's status and, once finished, its result",
                    "operationId": "getJob",
                    "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {"200": answer("the job", "Job"), "404": answer("no such job", "Error")},
                },
            },
            "/openapi.json": {
                "get": {"summary": "This description", "operationId": "getOpenApi",
                        "responses": {"200": {"description": "the OpenAPI document",
                                              "content": {"application/json": {"schema": {"type": "object"}}}}}},
            },
        },
        "components": {
            "schemas": {
                "Request": {
                    "type": "object",
                    "required": ["action"],
                    "properties": {
                        "action": {"type": "string", "enum": names},
                        "module": {"type": "string"}, "entry": {"type": "string"}, "repo": {"type": "string"},
                        "cid": {"type": "string", "description": "[repo:]module[:entry]"},
                        "cids": {"type": "array", "items": {"type": "string"}},
                        "tags": {"type": "string", "description": "comma list; -tag excludes"},
                    },
                    "additionalProperties": True,
                },
                "Result": {
                    "type": "object",
                    "required": ["return"],
                    "properties": {
                        "return": {"type": "integer", "description": "0 ok; ckx's exit codes otherwise"},
                        "warnings": {"type": "array", "items": {"type": "string"}},
                        "messages": {"type": "array", "items": {"type": "string"}},
                    },
                    "additionalProperties": True,
                },
                "Error": {
                    "type": "object",
                    "required": ["return", "error"],
                    "properties": {"return": {"type": "integer"}, "error": {"type": "string"},
                                   "hint": {"type": "string"}, "error_type": {"type": "string"}},
                    "additionalProperties": True,
                },
                "JobAccepted": {
                    "type": "object",
                    "required": ["return", "job", "status"],
                    "properties": {"return": {"type": "integer"}, "job": {"type": "string"},
                                   "status": {"type": "string"}, "href": {"type": "string"}},
                },
                "Job": {
                    "type": "object",
                    "required": ["job", "status", "action"],
                    "properties": {
                        "return": {"type": "integer"},
                        "job": {"type": "string"},
                        "action": {"type": "string", "enum": long_names or names},
                        "module": {"type": "string", "nullable": True},
                        "status": {"type": "string", "enum": ["queued", "running", "done", "failed"]},
                        "created": {"type": "string"}, "started": {"type": "string"}, "finished": {"type": "string"},
                        "result": ref("Result"),
                        "http_status": {"type": "integer"},
                    },
                },
                "JobList": {
                    "type": "object",
                    "properties": {"return": {"type": "integer"}, "jobs": {"type": "array", "items": ref("Job")}},
                },
            },
        },
    }
    if token_required:
        spec["components"]["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
        spec["security"] = [{"bearerAuth": []}]
    return spec


__all__ = [
    "REFUSED_INPUTS", "ApiServer", "ContextPool", "Job", "JobManager", "WEB_ACTIONS", "WebError", "action_serve", "check_request",
    "http_status", "is_loopback", "make_server", "openapi_spec", "web_actions",
]
