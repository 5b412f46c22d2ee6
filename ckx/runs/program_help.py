"""`ckx run program[:NAME] --help`: a program's command keys, variables and dependencies, or the list of programs."""
from __future__ import annotations

from typing import Any, Mapping

from ckx.core.cid import Cid
from ckx.core.errors import MetaError, UsageError
from ckx.runs.program import MODULE, command_keys, load_program
from ckx.store.context import Context
from ckx.store.generic import merged_meta, resolve_entry
from ckx.store.index import EntryRecord, Query

# How many command keys a line of the program listing names before it abbreviates.
LISTED_KEYS = 6


def program_help(ctx: Context, inp: dict) -> dict:
    """The help of ``run``/``benchmark program`` for ``inp``: one program's (``program:NAME``), or the listing.

    Returns ``{"text": ..., "program": {...}}`` or ``{"text": ..., "programs": [...]}``; NotFound or
    Ambiguous for a name that matches no single program.
    """
    name = inp.get("entry")
    if name:
        cid = Cid(module=MODULE, entry=name, repo=inp.get("repo"))
        return describe_program(ctx, resolve_entry(ctx, cid), f"{inp.get('action', 'run')} program:{name}")
    return list_programs(ctx, inp.get("action") or "run")


def _program_meta(ctx: Context, record: EntryRecord) -> tuple[dict, str | None]:
    """(merged meta, None), or for a program ckx does not run (a CK-format one) its own meta and why."""
    try:
        return load_program(ctx, record.cid).meta, None
    except (MetaError, UsageError) as exc:
        try:
            meta = merged_meta(ctx, record)
        except MetaError:
            meta = record.meta
        return meta, exc.message


def describe_program(ctx: Context, record: EntryRecord, usage: str) -> dict:
    """The command keys (with their descriptions and variables), run variables and dependencies of one program."""
    meta, problem = _program_meta(ctx, record)
    keys = command_keys(meta)
    commands: Mapping[str, Any] = meta.get("run_cmds") or {}
    lines = [f"program {record.cid}: {meta.get('name') or record.name}"]
    aliases = [a for a in meta.get("aliases") or () if isinstance(a, str)]
    if aliases:
        lines.append("  also called: " + ", ".join(aliases))
    if problem:
        lines.append(f"  ckx does not run it as it is: {problem}")
    lines.append(f"usage: ckx {usage} --cmd_key=KEY [--env.VAR=VALUE] [--dep_add_tags.DEP=tags]")
    lines.append("command keys (--cmd_key=KEY):" if keys else "command keys: none")
    width = max((len(k) for k in keys), default=0)
    for key in keys:
        command = commands.get(key) or {}
        description = command.get("description") if isinstance(command, dict) else None
        values = command.get("run_vars") if isinstance(command, dict) else None
        sets = " ".join(f"{k}={v}" for k, v in sorted((values or {}).items()))
        text = "  ".join(filter(None, [str(description or ""), f"[{sets}]" if sets else ""]))
        lines.append(f"  {key:<{width}}  {text}".rstrip())
    run_vars = meta.get("run_vars") or {}
    if run_vars:
        lines.append("variables (--env.VAR=VALUE; default shown):")
        lines += [f"  {k}={v}" for k, v in sorted(run_vars.items())]
    deps = meta.get("deps") or {}
    if isinstance(deps, dict) and deps:
        lines.append("dependencies (--dep_add_tags.NAME=tags narrows one, --deps.NAME=ENV_UID forces one):")
        for dep_name, spec in sorted(deps.items(), key=lambda item: (_sort(item[1]), item[0])):
            tags = spec.get("tags", "") if isinstance(spec, dict) else ""
            when = spec.get("enable_if_env") if isinstance(spec, dict) else None
            condition = (" when " + ", ".join(f"{k} in {v}" for k, v in sorted(when.items()))) if when else ""
            lines.append(f"  {dep_name}: {tags}{condition}")
    data = {"cid": record.cid, "name": record.name, "command_keys": keys, "run_vars": dict(run_vars),
            "deps": sorted(deps) if isinstance(deps, dict) else [], "runs": problem is None}
    return {"program": data, "text": "\n".join(lines)}


def _sort(spec: Any) -> float:
    value = spec.get("sort") if isinstance(spec, dict) else None
    return float(value) if isinstance(value, (int, float)) else 0.0


def list_programs(ctx: Context, action: str) -> dict:
    """Every program that runs by itself (abstract base entries left out) with its command keys."""
    rows = []
    for record in ctx.index.query(Query(module=MODULE)):
        meta = record.meta
        if meta.get("abstract"):
            continue
        try:
            keys = command_keys(merged_meta(ctx, record))
        except MetaError:
            keys = command_keys(meta)
        rows.append((record, keys))
    lines = [f"usage: ckx {action} program:NAME --cmd_key=KEY   ('ckx {action} program:NAME --help' describes one)"]
    lines.append(f"programs ({len(rows)}):" if rows else "no programs: 'ckx pull repo:...' or 'ckx add program:NAME' adds some")
    width = max((len(r.cid) for r, _ in rows), default=0)
    for record, keys in rows:
        shown = ", ".join(keys[:LISTED_KEYS]) + (f", ... ({len(keys)} keys)" if len(keys) > LISTED_KEYS else "")
        lines.append(f"  {record.cid:<{width}}  {shown or '(no command keys)'}")
    return {"programs": [{"cid": r.cid, "command_keys": k} for r, k in rows], "text": "\n".join(lines)}


__all__ = ["describe_program", "list_programs", "program_help"]
