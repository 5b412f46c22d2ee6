"""The actions that detect and install software: ``ckx detect soft`` and ``ckx install package``."""
from __future__ import annotations

import os
from typing import Any

from ckx.core.errors import UsageError
from ckx.core.inputs import as_bool
from ckx.software.detectors import split_list as _split_list
from ckx.software.resolve import detect, install
from ckx.store.context import Context


def _int_option(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"--{name} must be a whole number, not {value!r}") from None
    if number < 0:
        raise UsageError(f"--{name} must not be negative")
    return number


def action_detect_soft(ctx: Context, inp: dict) -> dict:
    """``ckx detect soft[:ALIAS] [--tags=] [--full_path=] [--search_dir=] [--search_depth=] [--force_version=]
    [--extra_tags=] [--python=] [--deps.python=ENV_UID]``."""
    entry = inp.get("entry")
    if inp.get("repo") and entry:
        entry = f"{inp['repo']}:{entry}"
    full_path = inp.get("full_path")
    if full_path is True:
        raise UsageError("--full_path needs a value: --full_path=PATH")
    deps = inp.get("deps") if isinstance(inp.get("deps"), dict) else {}
    report = detect(
        ctx, entry, tags=inp.get("tags"), full_path=os.path.expanduser(full_path) if full_path else None,
        search_dirs=_split_list(inp.get("search_dir") or inp.get("search_dirs")),
        search_depth=_int_option(inp.get("search_depth"), "search_depth"),
        force_version=inp.get("force_version") if isinstance(inp.get("force_version"), str) else None,
        extra_tags=_split_list(inp.get("extra_tags")), python=inp.get("python") if isinstance(inp.get("python"), str) else None,
        deps={str(k): str(v) for k, v in deps.items()},
    )
    lines = []
    for record, new in zip(report.envs, report.new, strict=True):
        state = "recorded" if new else "already recorded"
        lines.append(f"{state} env {record.uid}: {record.soft} {record.version or '(no version)'} {record.full_path}")
    return {
        "return": 0, "envs": [dict(r.summary(), new=n) for r, n in zip(report.envs, report.new, strict=True)],
        "softs": report.softs, "subprocesses": report.subprocesses, "text": "\n".join(lines),
    }


def action_install(ctx: Context, inp: dict) -> dict:
    """``ckx install package[:ALIAS] --tags=... [--variation=V] [--version=V] [--local_path=FILE] [--force]``."""
    alias = inp.get("entry")
    tags = inp.get("tags")
    if isinstance(tags, bool):
        raise UsageError("--tags needs a value: --tags=a,b")
    result = install(
        ctx, tags=tags, alias=alias, repo=inp.get("repo"),
        variation=_text_or_none(inp.get("variation"), "variation"),
        version=_text_or_none(inp.get("version"), "version"),
        local_path=_text_or_none(inp.get("local_path"), "local_path"),
        offline=as_bool(inp.get("offline"), "offline"), force=as_bool(inp.get("force"), "force"),
    )
    env = result.env
    text = {
        "installed": f"installed {result.candidate.label}",
        "already-installed": f"{result.candidate.label} was already installed",
        "already-available": f"{result.candidate.label} is already available",
    }[result.status]
    lines = [text, f"  env:     {env.uid}", f"  version: {env.version or '-'}"]
    if env.install_dir:
        lines.append(f"  dir:     {env.install_dir}")
    elif env.full_path:
        lines.append(f"  path:    {env.full_path}")
    return {
        "return": 0,
        "status": result.status,
        "package": result.candidate.record.summary(),
        "variation": result.candidate.variation,
        "env_uid": env.uid,
        "version": env.version,
        "install_dir": env.install_dir,
        "full_path": env.full_path,
        "env": dict(env.env),
        "text": "\n".join(lines),
    }


def _text_or_none(value: Any, key: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise UsageError(f"--{key} needs a value: --{key}=...")
    return str(value)
