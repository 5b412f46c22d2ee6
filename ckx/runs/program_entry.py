"""Program entries and what a run is made of: the entry with its bases, the command key, the deps, the env and argv."""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ckx.core.cid import Cid
from ckx.store.context import Context
from ckx.store.entry import normalise_tags, validate_meta
from ckx.core.errors import MetaError, UsageError
from ckx.store.index import EntryRecord, Query
from ckx.software.environment import apply_layer, env_text, render
from ckx.runs.ckprograms import ck_program_error
from ckx.store.generic import merged_meta, resolve_base, resolve_entry

log = logging.getLogger(__name__)

MODULE = "program"


@dataclass(frozen=True)
class Program:
    """A program entry with its base entries merged in; ``base_path`` is the root of its chain of bases."""

    record: EntryRecord
    meta: dict
    base_path: Path | None

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def path(self) -> Path:
        return self.record.path


@dataclass(frozen=True)
class Template:
    """The values argv and run_vars templates may use: fixed placeholders and the environment."""

    values: Mapping[str, str | None]
    env: Mapping[str, str]
    source: str = "program"
    missing: list[str] = field(default_factory=list)


# -- loading -------------------------------------------------------------------------------------
def load_program(ctx: Context, cid: str, *, cmd_key: str | None = None) -> Program:
    """The program named by ``cid`` (``NAME``, ``program:NAME`` or ``REPO:program:NAME``), base merged.

    A name several repos use resolves to the best-ranked entry (the built-in and the user's own before
    pulled ones, native before CK-format). Raises NotFound / Ambiguous for the name, UsageError for an
    abstract base entry or a CK-format program (naming the native program that does its job, with
    ``cmd_key`` in the suggested command), MetaError for a merged meta that fails the program schema.
    """
    parsed = Cid.parse(cid)
    if parsed.entry is None:
        parsed = Cid(module=MODULE, entry=parsed.module)
    if parsed.module != MODULE:
        raise UsageError(f"{cid!r} is not a program", hint="usage: ckx run program:NAME --cmd_key=KEY")
    record = resolve_entry(ctx, parsed)
    if record.ck_format:
        raise ck_program_error(ctx, record, cmd_key=cmd_key)
    meta = merged_meta(ctx, record)
    own = record.meta
    if own.get("abstract"):
        users = [r.name for r in ctx.index.query(Query(module=MODULE))
                 if r.meta.get("base") in (record.alias, record.uid)]
        raise UsageError(
            f"program {record.name} is a base entry shared by other programs; it does not run by itself",
            hint=("run one of: " + ", ".join(sorted(users))) if users else "run a program whose \"base\" it is",
        )
    meta.pop("abstract", None)
    validate_meta(meta, MODULE, f"{record.meta_path} (with its base entries merged)")
    base_path = None
    current = record
    for _ in range(32):  # merged_meta has already refused loops; this only walks to the root of the chain
        base = current.meta.get("base") or current.meta.get("_base_entry")
        if not base:
            break
        current = resolve_base(ctx, current, str(base))
        base_path = current.path
    return Program(record=record, meta=meta, base_path=base_path)


def command_keys(meta: Mapping[str, Any]) -> list[str]:
    """The command keys of a (merged) program meta, sorted."""
    return sorted((meta.get("run_cmds") or {}).keys())


def choose_cmd_key(ctx: Context, program: Program, cmd_key: str | None) -> str:
    """Check ``cmd_key``, or ask for one on a TTY; UsageError (exit 2) listing the keys otherwise."""
    keys = command_keys(program.meta)
    if not keys:
        raise MetaError(f"{program.record.meta_path}: field 'run_cmds': program {program.name} has no command keys")
    listing = ", ".join(keys)
    if cmd_key:
        if cmd_key not in keys:
            raise UsageError(f"program {program.name} has no command key {cmd_key!r}", hint=f"command keys: {listing}")
        return cmd_key
    if len(keys) == 1:
        return keys[0]
    if ctx.interactive:
        picked = ctx.reporter.choose(f"which command of {program.name}?", keys, None)
        if picked is not None and 0 <= picked < len(keys):
            return keys[picked]
    raise UsageError(
        f"program {program.name} needs --cmd_key",
        hint=f"command keys: {listing}; e.g. ckx run program:{program.name} --cmd_key={keys[0]}",
    )


# -- dependencies --------------------------------------------------------------------------------
def env_matches(condition: Mapping[str, Any], env: Mapping[str, str]) -> bool:
    """True when every ``VAR: wanted`` of ``condition`` holds in ``env``.

    ``wanted`` is a list of accepted values (or one value); ``true`` means set and non-empty,
    ``false`` means unset or empty.
    """
    for var, wanted in condition.items():
        value = env.get(var, "")
        if wanted is True:
            ok = value != ""
        elif wanted is False:
            ok = value == ""
        else:
            accepted = wanted if isinstance(wanted, list) else [wanted]
            ok = value in [env_text(a) for a in accepted]
        if not ok:
            return False
    return True


def merge_tags(tags: Any, add: Any) -> str:
    """``tags`` narrowed by ``add`` (comma lists); an added tag replaces its opposite (``x`` drops ``-x``)."""
    result = normalise_tags(tags)
    for tag in normalise_tags(add):
        opposite = tag[1:] if tag.startswith("-") else "-" + tag
        result = [t for t in result if t != opposite]
        if tag not in result:
            result.append(tag)
    return ",".join(result)


def select_deps(
    deps: Mapping[str, Any], config_env: Mapping[str, str], add_tags: Mapping[str, str], forced: Mapping[str, str],
    *, source: str,
) -> tuple[dict[str, dict], list[str]]:
    """The dependency specs this run needs, ready for the resolver, and the names left out.

    Deps set to null (a derived program dropping one) and deps whose ``enable_if_env`` does not hold in
    ``config_env`` are left out. ``add_tags`` narrows tags (see :func:`merge_tags`); a narrowed dep uses its
    main tags even under --offline, since the user has chosen. UsageError for unknown names.
    """
    known = sorted(name for name, spec in deps.items() if spec is not None)
    canonical = {name: name for name in known}
    for name in known:  # a dep's "names" are other names for it on the command line
        other = deps[name].get("names") or []
        for alias in [other] if isinstance(other, str) else other:
            canonical.setdefault(str(alias), name)
    for what, names in (("--dep_add_tags", add_tags), ("--deps", forced)):
        unknown = sorted(set(names) - set(canonical))
        if unknown:
            raise UsageError(f"{what}: {source} has no dependency {', '.join(unknown)}",
                             hint=f"its dependencies: {', '.join(known) or 'none'}")
    narrowing = {canonical[name]: tags for name, tags in add_tags.items() if tags}
    selected: dict[str, dict] = {}
    skipped: list[str] = []
    for name in known:
        spec = dict(deps[name])
        condition = spec.pop("enable_if_env", None)
        if condition and not env_matches(condition, config_env):
            skipped.append(name)
            continue
        if isinstance(spec.get("tags"), list):
            spec["tags"] = ",".join(normalise_tags(spec["tags"]))
        if isinstance(spec.get("offline_tags"), list):
            spec["offline_tags"] = ",".join(normalise_tags(spec["offline_tags"]))
        if isinstance(spec.get("skip_if_env"), str):
            spec["skip_if_env"] = [spec["skip_if_env"]]
        if narrowing.get(name):
            spec["tags"] = merge_tags(spec.get("tags"), narrowing[name])
            spec.pop("offline_tags", None)
        selected[name] = spec
    return selected, skipped


# -- environment ---------------------------------------------------------------------------------
# Layers merge by the one rule of ckx.software.environment (apply_layer), as install and virtual env do.


def assemble_env(
    base: Mapping[str, str], dep_envs: Iterable[Mapping[str, Any]], run_vars: Mapping[str, Any],
    key_vars: Mapping[str, Any], user_env: Mapping[str, Any], template: Template | None = None,
) -> dict[str, str]:
    """The environment of a run: ``base``, then each dep's env (in order), run_vars, the key's run_vars, --env.

    run_vars of the meta are templated (``{entry_path}``, ``{env:VAR}``, ...) against what came before;
    user values are taken literally.
    """
    env = dict(base)
    for dep_env in dep_envs:
        apply_layer(env, dep_env)
    for layer in (run_vars, key_vars):
        expanded: dict[str, Any] = {}
        for var, raw in layer.items():
            if isinstance(raw, str) and template is not None:
                expanded[var], _ = substitute(raw, Template(template.values, env, template.source))
            else:
                expanded[var] = raw
        apply_layer(env, expanded)
    apply_layer(env, user_env)
    return env


# -- argv templates ------------------------------------------------------------------------------
def substitute(text: str, template: Template) -> tuple[str, bool]:
    """Expand ``text``; returns (expanded, complete) where complete is False when an env reference was empty.

    ``{python}``, ``{entry_path}``, ``{base_path}``, ``{run_dir}``, ``{cache_dir}`` are placeholders;
    ``{env:VAR}``, ``$VAR`` and ``${VAR}`` read the environment; ``{{``, ``}}`` and ``$$`` are literal.
    MetaError (from the one placeholder engine, ckx.software.environment.render) for an unknown
    placeholder or one this program has no value for.
    """
    return render(text, template.values, where=template.source, env=template.env,
                  unavailable={"base_path": "the program has no base entry"})


def expand_argv(items: Sequence[Any], template: Template) -> list[str]:
    """The argv of a template list; items with an empty env reference are dropped.

    An item is a string, a list of strings (a group: kept or dropped whole, e.g. ``["--threads",
    "{env:MLPERF_THREADS}"]``) or ``{"argv": [...], "if_env": {VAR: [values]}}`` (kept when the env
    matches, as for a dep's enable_if_env). A string or group with any env reference that is unset or
    empty is left out, so optional options vanish cleanly; literal strings are always kept.
    """
    argv: list[str] = []
    for item in items:
        if isinstance(item, str):
            text, complete = substitute(item, template)
            if complete:
                argv.append(text)
            else:
                template.missing.append(item)
        elif isinstance(item, list):
            group = [substitute(str(part), template) for part in item]
            if all(complete for _, complete in group):
                argv.extend(text for text, _ in group)
            else:
                template.missing.append(" ".join(map(str, item)))
        elif isinstance(item, dict):
            condition = item.get("if_env") or {}
            if env_matches(condition, template.env):
                argv.extend(expand_argv(item.get("argv") or [], template))
        else:
            raise MetaError(f"{template.source}: field 'argv': item {item!r} is neither a string, a list nor an object")
    return argv


# -- the command ---------------------------------------------------------------------------------
def build_command(
    program: Program, key: str, resolved: Sequence[Any], user_env: Mapping[str, str], *, run_dir: Path,
    cache_dir: Path, extra_args: Sequence[str] = (), base_env: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of one run of ``key``, given its resolved deps (anything with ``env``,
    ``soft`` and ``full_path``). MetaError for a bad template or an argv that expands to nothing."""
    meta = program.meta
    command = meta["run_cmds"][key] or {}
    source = f"program {program.name} ({program.record.meta_path})"
    values = {"python": _python_of(resolved), "entry_path": str(program.path),
              "base_path": str(program.base_path) if program.base_path else None,
              "run_dir": str(run_dir), "cache_dir": str(cache_dir)}
    full_env = assemble_env(os.environ if base_env is None else base_env, [dict(d.env or {}) for d in resolved],
                            meta.get("run_vars") or {}, command.get("run_vars") or {}, user_env,
                            Template(values, {}, source))
    full_env.update({"CKX_RUN_DIR": str(run_dir), "CKX_PROGRAM_PATH": str(program.path)})
    # Python programs: stream their output as it comes, and write no __pycache__ into the entry's directory.
    for var in ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"):
        full_env.setdefault(var, "1")
    argv_template = command.get("argv") or meta.get("argv")
    if not argv_template:
        raise MetaError(f"{source}: field 'argv': neither the command key {key!r} nor the program has an argv")
    template = Template(values, full_env, source)
    argv = expand_argv(argv_template, template) + [str(a) for a in extra_args]
    if not argv:
        raise MetaError(f"{source}: the argv of {key!r} expands to nothing")
    for item in template.missing:
        log.info("argv item %r left out: an environment variable in it is empty", item)
    return argv, full_env


def _python_of(resolved: Sequence[Any]) -> str:
    for dep in resolved:
        if getattr(dep, "soft", None) == "compiler.python" and getattr(dep, "full_path", None):
            return str(dep.full_path)
    return sys.executable
