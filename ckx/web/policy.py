"""What the web API offers and refuses: the reachable actions, refused inputs, HTTP statuses, request checks."""
from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any
from urllib.parse import parse_qsl

from ckx.api import ACTION_ALIASES, ACTIONS, Action, lookup, normalise
from ckx.core.cid import Cid
from ckx.core.errors import CkxError, UsageError
from ckx.core.inputs import set_dotted
from ckx.core.limits import DEFAULT_LIMITS, Limits, nesting_depth

# The actions reachable over the web, as (name, module) keys of ckx.api.ACTIONS. Left out on purpose:
# serve itself, zip (writes an archive wherever it is told), dashboard (writes files, may serve),
# virtual env and activate/create/rm venv (spawn shells or build environments); REFUSED_INPUTS below
# refuses `rm repo --all`, and every path input (`export experiment --out=FILE`, ...) is refused too.
WEB_ACTIONS: frozenset[tuple[str, str | None]] = frozenset({
    ("add", None), ("load", None), ("find", None), ("search", None), ("list", None), ("rm", None),
    ("ren", None), ("cp", None), ("list_tags", None), ("path", None),
    ("add", "repo"), ("list", "repo"), ("rm", "repo"), ("pull", "repo"), ("unzip", "repo"),
    ("detect", "soft"), ("detect", "platform"), ("search", "package"), ("install", "package"), ("show", "env"), ("rm", "env"),
    ("list", "venv"),
    ("run", "program"), ("benchmark", "program"),
    ("show", "experiment"), ("replay", "experiment"), ("export", "experiment"),
    ("version", None), ("help", None), ("uid", None), ("reindex", None),
})

# Inputs refused even on reachable actions: they delete files outside the entries.
REFUSED_INPUTS: dict[tuple[str, str | None], dict[str, str]] = {
    ("rm", "repo"): {"all": "deleting a repo's files"},
}

# Inputs that name a file or directory on the server, besides every option declared with type "path":
# refused over the web whatever --allow_writes says (a client must not make the server read or write
# its files: `install --local_path=/etc/shadow` would tell the file's checksum).
SERVER_PATH_INPUTS: dict[tuple[str, str | None], tuple[str, ...]] = {
    ("detect", "soft"): ("search_dir",),
}
# Inputs that must be a URL of another machine: a local path or file:// URL is refused over the web.
REMOTE_URL_INPUTS: dict[tuple[str, str | None], dict[str, tuple[str, ...]]] = {
    ("pull", "repo"): {"url": ("https://", "http://", "ssh://", "git://")},
    ("unzip", "repo"): {"zip": ("https://", "http://")},
}
_SCP_LIKE = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:[^:]")  # git@host:owner/repo, which is ssh

STATUS_BY_RETURN = {0: 200, 2: 400, 3: 404, 5: 422}
_CID_KEYS = ("module", "entry", "repo", "cid")


def http_status(result: dict) -> int:
    """The HTTP status of an access() result: 0 -> 200, 2 -> 400, 3 -> 404, 5 -> 422, others 500."""
    code = result.get("return", 0)
    return STATUS_BY_RETURN.get(code, 500) if isinstance(code, int) else 500


def web_actions() -> list[Action]:
    """The Action objects reachable over the web, in ACTIONS order."""
    return [a for a in ACTIONS if (a.name, a.module) in WEB_ACTIONS]


@functools.lru_cache(maxsize=256)  # asked of every request's Host header: the same few names each time
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


# =========================================================================== requests


def check_request(request: dict, *, method: str, allow_writes: bool = False,
                  limits: Limits = DEFAULT_LIMITS) -> tuple[dict, Action]:
    """Normalise and police one request: (input, action), or WebError with the HTTP status.

    The action's declared options are checked here, so a misspelt or ill-typed option is a 400 at once,
    also for the long actions that would otherwise fail later inside a job. In order: 400 for bad input
    (wrong types, more than ``limits.request_max_items`` items, nesting deeper than
    ``limits.request_max_depth``), 403 for an action not offered, 400 for a server path, 405 for a GET
    of an action that changes things, 403 for such an action unless ``allow_writes``.
    """
    check_shape(request, limits)
    name = request.get("action")
    if not isinstance(name, str) or not name:
        raise WebError(400, "the request has no 'action'", hint="send {\"action\": \"search\", ...}; GET /openapi.json describes the API")
    if ACTION_ALIASES.get(name, name) not in {a.name for a in ACTIONS}:
        raise WebError(404, f"unknown action {name!r}", hint="GET /openapi.json lists the actions")
    try:
        for key in _CID_KEYS:  # before normalise(), which takes them to be strings
            value = request.get(key)
            if value is not None and not isinstance(value, str):
                raise UsageError(f"'{key}' must be a string, not {type(value).__name__}")
            if value is not None and ("/" in value or "\\" in value or ".." in value.split(":")):
                raise UsageError(f"invalid {key} {value!r}: path separators and '..' are not allowed")
        inp = normalise(request)
        cids = inp.get("cids", [])
        if not isinstance(cids, list) or not all(isinstance(c, str) for c in cids):
            raise UsageError("'cids' must be a list of strings")
        for text in cids:
            Cid.parse(text)
        action = lookup(inp["action"], inp.get("module"))
        typed = action.parse(inp)
        _check_sizes(typed, limits)
    except CkxError as exc:
        raise WebError(400, exc.message, hint=exc.hint) from None
    if (action.name, action.module) not in WEB_ACTIONS:
        where = f" {action.module}" if action.module else ""
        raise WebError(403, f"'{action.name}{where}' is not available over the web API", code=2,
                       hint="run it with the ckx command line")
    for key, why in REFUSED_INPUTS.get((action.name, action.module), {}).items():
        if typed.get(key):
            where = f" {action.module}" if action.module else ""
            raise WebError(403, f"'{action.name}{where} --{key}' ({why}) is not available over the web API", code=2,
                           hint="leave it out, or use the ckx command line")
    _refuse_server_paths(action, typed)
    if method == "GET" and not action.read_only:
        raise WebError(405, f"'{action.name}' changes things: use POST", headers={"Allow": "POST"})
    if not action.read_only and not allow_writes:
        label = action.label if action.module or not inp.get("module") else f"{action.name} {inp['module']}"
        raise WebError(403, f"'{label}' runs code or changes files: this server was started without --allow_writes",
                       hint="restart it with 'ckx serve --allow_writes' to allow it, or use the ckx command line")
    inp["quiet"] = True
    return inp, action


def check_shape(request: dict, limits: Limits = DEFAULT_LIMITS) -> None:
    """WebError 400 naming the first top-level field nested deeper than ``limits.request_max_depth``."""
    for key, value in request.items():
        if isinstance(value, (dict, list)) and nesting_depth(value) >= limits.request_max_depth:
            raise WebError(400, f"field {key!r} is nested more than {limits.request_max_depth} levels deep",
                           hint="raise 'limits.request_max_depth' in $CKX_HOME/settings.json if such input is real")


def _check_sizes(typed: dict, limits: Limits) -> None:
    """UsageError naming the option whose list or map holds more than ``limits.request_max_items`` items."""
    for key, value in typed.items():
        if isinstance(value, (list, tuple, dict)) and len(value) > limits.request_max_items:
            raise UsageError(f"--{key} holds {len(value)} items; at most {limits.request_max_items} are accepted",
                             hint="raise 'limits.request_max_items' in $CKX_HOME/settings.json if such input is real")


def server_path_options(action: Action) -> list[str]:
    """The names of ``action``'s options that name a file or directory on the server."""
    declared = [o.name for o in action.options if o.type == "path"]
    return declared + [n for n in SERVER_PATH_INPUTS.get((action.name, action.module), ()) if n not in declared]


def _refuse_server_paths(action: Action, typed: dict) -> None:
    """WebError 400 naming an input that points at the server's own files (refused even with --allow_writes)."""
    for name in server_path_options(action):
        if typed.get(name):
            raise WebError(400, f"field {name!r} names a path on the server: not accepted over the web API",
                           hint=f"leave '{name}' out, or run 'ckx {action.label} --{name}=...' on the server itself")
    for name, schemes in REMOTE_URL_INPUTS.get((action.name, action.module), {}).items():
        value = typed.get(name)
        scp_like = "ssh://" in schemes and _SCP_LIKE.match(value or "")
        if value and not (value.lower().startswith(schemes) or scp_like):
            raise WebError(400, f"field {name!r} must be a URL of another machine ({', '.join(schemes)}), not {value!r:.80}",
                           hint="local paths and file:// URLs name the server's own files: not accepted over the web API")


def query_to_request(query: str) -> dict:
    request: dict[str, Any] = {}
    try:
        for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
            flag = value == "" and key not in ("action", "module", "entry", "repo", "cid", "tags")
            set_dotted(request, key, True if flag else value)
    except UsageError as exc:
        raise WebError(400, exc.message) from None
    return request


__all__ = [
    "REFUSED_INPUTS", "REMOTE_URL_INPUTS", "SERVER_PATH_INPUTS", "STATUS_BY_RETURN", "WEB_ACTIONS", "WebError",
    "check_request", "check_shape", "http_status", "is_loopback", "query_to_request", "server_path_options",
    "web_actions",
]
