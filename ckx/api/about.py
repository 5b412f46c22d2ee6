"""Actions about ckx itself: version, help, uid, reindex."""
from __future__ import annotations

import platform
import sys

from ckx import __version__
from ckx.api import ACTION_ALIASES, ACTIONS
from ckx.core.cid import new_uid
from ckx.store.context import Context
from ckx.core.errors import UsageError


def version(ctx: Context, inp: dict) -> dict:
    """ckx's version and the interpreter running it."""
    return {"return": 0, "version": __version__, "python": platform.python_version(), "executable": sys.executable,
            "text": f"ckx {__version__} (Python {platform.python_version()})"}


def help_action(ctx: Context, inp: dict) -> dict:
    """All actions, or the usage of one: ``ckx help [ACTION]``."""
    cids = inp.get("cids") or []
    topic = inp.get("topic") or (cids[0] if cids else None) or inp.get("module")
    if topic:
        name = ACTION_ALIASES.get(topic, topic)
        matching = [a for a in ACTIONS if a.name == name]
        if not matching:
            raise UsageError(f"unknown action {topic!r}", hint="'ckx help' lists the actions")
        lines = [f"{a.usage}\n    {a.summary}" for a in matching]
        return {"return": 0, "action": name, "usages": [a.usage for a in matching], "text": "\n".join(lines)}
    lines = ["usage: ckx ACTION [CID ...] [--key=value] [--flag] [@input.json|@input.yaml] [-- extra args]", "",
             "CID = [repo:]module[:entry] (alias or uid, * and ? wildcards in list/search)", "",
             "options every action takes: --json (one JSON document out), --quiet (never prompt)", "", "actions:"]
    for action in ACTIONS:
        where = f" {action.module}" if action.module else ""
        lines.append(f"  {action.name + where:<22} {action.summary}")
    aliases = ", ".join(f"{k}={v}" for k, v in sorted(ACTION_ALIASES.items()))
    lines += ["", f"aliases: {aliases}", "'ckx help ACTION' shows an action's usage."]
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
