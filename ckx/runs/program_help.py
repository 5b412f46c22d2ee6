"""`ckx run program[:NAME] --help`: a program's command keys, variables and dependencies, or the list of programs."""
from __future__ import annotations

from typing import Any, Mapping

from ckx.core.cid import Cid
from ckx.core.errors import Ambiguous, CkxError
from ckx.runs.program_entry import MODULE, command_keys, load_program
from ckx.store.context import Context
from ckx.store.generic import find_entries, merged_meta, resolve_entry
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
        return describe_program(ctx, _one_program(ctx, cid), f"{inp.get('action', 'run')} program:{name}")
    return list_programs(ctx, inp.get("action") or "run")


def is_ck_format(record: EntryRecord) -> bool:
    """An entry of a CK-format repo (``.cm/meta.json``), whose programs ckx lists but does not run as they are."""
    return record.meta_path.parent.name == ".cm"


def _one_program(ctx: Context, cid: Cid) -> EntryRecord:
    """The program ``cid`` names; of several, the only native one (a pulled CK repo shares CK's names)."""
    try:
        return resolve_entry(ctx, cid)
    except Ambiguous:
        native = [r for r in find_entries(ctx, cid) if not is_ck_format(r)]
        if len(native) != 1:
            raise
        return native[0]


def _program_meta(ctx: Context, record: EntryRecord) -> tuple[dict, str | None]:
    """(merged meta, None), or for a program ckx does not run (a CK-format one) its own meta and why."""
    try:
        return load_program(ctx, f"{record.repo}:{MODULE}:{record.uid or record.name}").meta, None
    except CkxError as exc:  # a meta ckx cannot run, an abstract entry, a CK base it cannot find
        return _merged_or_own(ctx, record), exc.message


def _merged_or_own(ctx: Context, record: EntryRecord) -> dict:
    """The meta with its bases merged, or its own when a base cannot be found (CK's ``_base_entry`` forms)."""
    try:
        return merged_meta(ctx, record)
    except CkxError:
        return record.meta


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
    """Every program that runs by itself (abstract base entries left out) with its command keys: native
    ones first, then those of CK-format repos (marked: ckx does not run them as they are)."""
    rows = []
    for record in ctx.index.query(Query(module=MODULE)):
        if record.meta.get("abstract"):
            continue
        rows.append((record, command_keys(_merged_or_own(ctx, record))))
    rows.sort(key=lambda row: is_ck_format(row[0]))
    lines = [f"usage: ckx {action} program:NAME --cmd_key=KEY   ('ckx {action} program:NAME --help' describes one)"]
    lines.append(f"programs ({len(rows)}):" if rows else "no programs: 'ckx pull repo:...' or 'ckx add program:NAME' adds some")
    width = max((len(r.cid) for r, _ in rows), default=0)
    for record, keys in rows:
        shown = ", ".join(keys[:LISTED_KEYS]) + (f", ... ({len(keys)} keys)" if len(keys) > LISTED_KEYS else "")
        mark = "[CK format] " if is_ck_format(record) else ""
        lines.append(f"  {record.cid:<{width}}  {mark}{shown or '(no command keys)'}")
    return {"programs": [{"cid": r.cid, "command_keys": k, "ck_format": is_ck_format(r)} for r, k in rows],
            "text": "\n".join(lines)}


__all__ = ["describe_program", "list_programs", "program_help"]
