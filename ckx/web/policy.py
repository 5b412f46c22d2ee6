"""What the web API offers and refuses: the reachable actions, refused inputs, HTTP statuses, request checks."""
from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import parse_qsl

from ckx.api import ACTION_ALIASES, ACTIONS, Action, lookup, normalise
from ckx.core.cid import Cid
from ckx.core.errors import CkxError, UsageError
from ckx.core.inputs import set_dotted

# The actions reachable over the web, as (name, module) keys of ckx.api.ACTIONS. Left out on purpose:
# serve itself, zip (writes an archive wherever it is told), dashboard (writes files, may serve),
# virtual env and activate/create/rm venv (spawn shells or build environments); REFUSED_INPUTS below
# refuses `rm repo --all` and `export experiment --out=FILE`.
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

# Inputs refused even on reachable actions: they delete or write files outside the repos.
REFUSED_INPUTS: dict[tuple[str, str | None], dict[str, str]] = {
    ("rm", "repo"): {"all": "deleting a repo's files"},
    ("export", "experiment"): {"out": "writing a file on the server"},
}

STATUS_BY_RETURN = {0: 200, 2: 400, 3: 404, 5: 422}
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


# =========================================================================== requests


def check_request(request: dict, *, method: str) -> tuple[dict, Action]:
    """Normalise and police one request: (input, action), or WebError with the HTTP status.

    The action's declared options are checked here, so a misspelt or ill-typed option is a 400 at once,
    also for the long actions that would otherwise fail later inside a job.
    """
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
        typed = action.parse(inp)
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
    if method == "GET" and not action.read_only:
        raise WebError(405, f"'{action.name}' changes things: use POST", headers={"Allow": "POST"})
    inp["quiet"] = True
    return inp, action


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
    "REFUSED_INPUTS", "STATUS_BY_RETURN", "WEB_ACTIONS", "WebError", "check_request", "http_status", "is_loopback",
    "query_to_request", "web_actions",
]
