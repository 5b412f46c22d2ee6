"""Actions about ckx itself: version, help, uid, reindex, and CK's `setup kernel`."""
from __future__ import annotations

import platform
import sys

from ckx import __version__
from ckx.api import ACTION_ALIASES, ACTIONS, describe_actions
from ckx.core.cid import new_uid
from ckx.core.options import GLOBAL_OPTIONS
from ckx.store.context import Context
from ckx.core.errors import UsageError


def version(ctx: Context, inp: dict) -> dict:
    """ckx's version and the interpreter running it."""
    return {"return": 0, "version": __version__, "python": platform.python_version(), "executable": sys.executable,
            "text": f"ckx {__version__} (Python {platform.python_version()})"}


def help_action(ctx: Context, inp: dict) -> dict:
    """All actions, or the usage and options of one: ``ckx help [ACTION [MODULE]]``."""
    cids = inp.get("cids") or []
    topic = inp.get("topic") or (cids[0] if cids else None) or inp.get("module")
    if topic:
        name = ACTION_ALIASES.get(topic, topic)
        matching = [a for a in ACTIONS if a.name == name]
        if not matching:
            raise UsageError(f"unknown action {topic!r}", hint="'ckx help' lists the actions")
        module = cids[1] if len(cids) > 1 and not inp.get("topic") else None
        if module and any(a.module == module for a in matching):
            matching = [a for a in matching if a.module == module]
        return describe_actions(matching)
    lines = ["usage: ckx ACTION [CID ...] [--key=value] [--flag] [@input.json|@input.yaml] [-- extra args]", "",
             "CID = [repo:]module[:entry] (alias or uid, * and ? wildcards in list/search)", "",
             "options every action takes: " + " ".join(o.flag for o in GLOBAL_OPTIONS), "", "actions:"]
    for action in ACTIONS:
        where = f" {action.module}" if action.module else ""
        lines.append(f"  {action.name + where:<22} {action.summary}")
    aliases = ", ".join(f"{k}={v}" for k, v in sorted(ACTION_ALIASES.items()))
    lines += ["", f"aliases: {aliases}", "'ckx help ACTION' shows an action's usage and options."]
    return {"return": 0, "actions": [{"name": a.name, "module": a.module, "usage": a.usage} for a in ACTIONS],
            "text": "\n".join(lines)}


def uid(ctx: Context, inp: dict) -> dict:
    """A fresh uid (16 hex digits)."""
    value = new_uid()
    return {"return": 0, "uid": value, "text": value}


def reindex(ctx: Context, inp: dict) -> dict:
    """Drop the index and build it again from every registered repo."""
    stats = ctx.index.rebuild()
    count = ctx.index.count()
    return {"return": 0, "entries": count, "updated": stats["updated"], "removed": stats["removed"],
            "text": f"indexed {count} entries in {len(ctx.registry.repos)} repos"}


# CK kernel variables that ckx answers in one line: what ckx does instead.
KERNEL_VARIABLES = {
    "install_to_env": "ckx always records an env for every package it installs (install directories live in "
                      "$CKX_TOOLS), so install_to_env={value} changes nothing",
}


def setup_kernel(ctx: Context, inp: dict) -> dict:
    """``ckx setup kernel [--var.NAME=VALUE ...]``: CK's kernel set-up, accepted; each variable gets its answer.

    ckx keeps no kernel configuration: the variables CK users set here describe behaviour ckx has already
    (``install_to_env``) or does not have; the latter are named in a warning, and nothing is written.
    """
    variables = dict(inp.get("var") or {})
    lines, ignored = [], []
    for name, value in sorted(variables.items()):
        answer = KERNEL_VARIABLES.get(name)
        if answer is None:
            ignored.append(name)
        else:
            lines.append(f"{name}: " + answer.format(value=value))
    if ignored:
        ctx.warn("CK kernel variables ckx has no use for, ignored: " + ", ".join(ignored))
    if not variables:
        lines.append("ckx keeps no kernel settings: nothing to set up (CK's install_to_env is always on in ckx)")
    return {"return": 0, "var": variables, "ignored": ignored, "text": "\n".join(lines)}
