"""The actions that detect and install software: ``ckx detect soft`` and ``ckx install package``."""
from __future__ import annotations

import os

from pathlib import Path

from ckx.core.errors import CkxError
from ckx.software.ckpackage import REFUSED, install_tier
from ckx.software.resolve import detect, install
from ckx.store.context import Context
from ckx.store.entry import load_meta
from ckx.store.generic import search


def action_detect_soft(ctx: Context, inp: dict) -> dict:
    """``ckx detect soft[:ALIAS] [--tags=] [--full_path=] [--search_dir=] [--search_depth=] [--force_version=]
    [--extra_tags=] [--python=] [--deps.python=ENV_UID]``; ``inp`` holds the typed options the action table declares."""
    entry = inp.get("entry")
    if inp.get("repo") and entry:
        entry = f"{inp['repo']}:{entry}"
    full_path = inp.get("full_path")
    report = detect(
        ctx, entry, tags=inp.get("tags") or None, full_path=os.path.expanduser(full_path) if full_path else None,
        search_dirs=list(inp.get("search_dir") or []), search_depth=inp.get("search_depth"),
        force_version=inp.get("force_version"), extra_tags=list(inp.get("extra_tags") or []),
        python=inp.get("python"), deps=dict(inp.get("deps") or {}),
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
    """``ckx install package[:ALIAS] --tags=... [--variation=V] [--version=V] [--local_path=FILE] [--force]``;
    ``inp`` holds the typed options the action table declares."""
    result = install(
        ctx, tags=inp.get("tags") or None, alias=inp.get("entry"), repo=inp.get("repo"),
        variation=inp.get("variation") or None, version=inp.get("version") or None,
        local_path=inp.get("local_path") or None, offline=bool(inp.get("offline")), force=bool(inp.get("force")),
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


def action_search_package(ctx: Context, inp: dict) -> dict:
    """``ckx search package [--tags=] [--search_string=] [--search_dict=] [--installable]``: generic search;
    ``--installable`` keeps the packages ckx can install and says which tier installs each (native, ck-script)."""
    result = search(ctx, dict(inp, module="package"))
    if not inp.get("installable"):
        return result
    kept, rows, refused = [], [], 0
    for entry in result["entries"]:
        tier, reason = _tier_of(ctx, entry)
        if tier == REFUSED:
            refused += 1
            continue
        kept.append(dict(entry, tier=tier, tier_reason=reason))
        rows.append([entry["cid"], tier, reason])
    return {"return": 0, "entries": kept, "refused": refused,
            "table": {"columns": ["package", "tier", "how"], "rows": rows}}


def _tier_of(ctx: Context, entry: dict) -> tuple[str, str]:
    path = Path(entry["path"])
    repo = ctx.registry.get(entry["repo"])
    meta_path = path / ".cm" / "meta.json" if repo.format == "ck" else None
    try:
        if meta_path is None:
            found = repo.find_meta(path)
            if found is None:
                return REFUSED, "no meta file"
            meta_path = found[0]
        meta = load_meta(meta_path)
        if meta.get("abstract"):
            return REFUSED, "an abstract base package"
        return install_tier(meta, path, repo)
    except CkxError as exc:
        return REFUSED, f"unreadable meta: {exc}"
