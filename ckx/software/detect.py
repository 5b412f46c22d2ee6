"""Detecting software with soft entries, and recording each instance found as an env.

A soft entry declares how to find its thing (``detect.kind``):

- ``python``: interpreters (the running one, ``python3``/``python`` on PATH, or ``--full_path``), each
  described by ONE short ``python -S -c`` subprocess whose answer is cached in $CKX_HOME/cache (the
  interpreter running ckx describes itself in process, with no subprocess at all);
- ``module``: a Python package in an interpreter's search path, found and versioned by reading the
  files (``<site>/<module>/__init__.py``, ``*.dist-info/METADATA``) without importing it anywhere;
- ``executable``: programs on PATH, versioned by running ``[exe, *version_args]`` through a regex;
- ``marker``: a marker file (glob allowed, with sibling files) under search directories, to a depth.

The soft entries and their ``customize.py`` hooks are in ckx.software.softs, the four detectors in
ckx.software.detectors, the interpreter probe in ckx.software.probing. A hook that raises becomes a
warning naming the soft entry and the candidate, and detection goes on with the next candidate.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from ckx.core.errors import NotFound, UsageError
from ckx.software.detectors import Detector, expand_dirs, split_list
from ckx.software.envs import EnvRecord, load_env, record_env_ex
from ckx.software.versions import version_text
from ckx.software.probing import Session
from ckx.software.softs import SoftEntry, find_softs, get_soft
from ckx.store.context import Context
from ckx.store.index import split_tags

DEFAULT_PYTHON_DEP = {"python": {"tags": "compiler,python", "sort": 0}}
# Finds the compiler.python env a module soft looks in when none is given: (ctx, soft, forced deps) -> env.
PythonFinder = Callable[[Context, SoftEntry, Mapping[str, str]], EnvRecord]

_ACTIVE_SESSION: ContextVar[Session | None] = ContextVar("ckx_detect_session", default=None)


@dataclass
class DetectReport:
    """What a detection did: the envs (new or already recorded) and how many subprocesses it ran."""

    envs: list[EnvRecord] = field(default_factory=list)
    new: list[bool] = field(default_factory=list)
    softs: list[str] = field(default_factory=list)
    subprocesses: int = 0


def _python_for(ctx: Context, session: Session, soft: SoftEntry, *, python: str | None,
                deps: Mapping[str, str], find_python: PythonFinder | None) -> EnvRecord:
    """The compiler.python env a module soft looks in: forced, given as a path, or found by ``find_python``."""
    if deps.get("python"):
        return load_env(ctx, deps["python"])
    if python:
        envs = detect(ctx, "compiler.python", full_path=python, _session=session).envs
        if envs:
            return envs[0]
        raise NotFound(f"{python} is not a Python interpreter ckx can use")
    if find_python is None:
        raise UsageError(f"soft {soft.alias} looks for a Python module: which interpreter?",
                         hint="give --python=PATH or --deps.python=ENV_UID")
    return find_python(ctx, soft, deps)


def detect(
    ctx: Context,
    soft: str | None = None,
    *,
    tags: str | Sequence[str] | None = None,
    full_path: str | os.PathLike | None = None,
    search_dirs: Sequence[str] | str = (),
    search_depth: int | None = None,
    force_version: str | None = None,
    extra_tags: Sequence[str] | str = (),
    python: str | None = None,
    deps: Mapping[str, str] | None = None,
    find_python: PythonFinder | None = None,
    _session: Session | None = None,
) -> DetectReport:
    """Detect with one soft entry (``soft``) or every soft that can provide ``tags``; record each instance.

    A ``module`` soft looks in the interpreter of ``deps["python"]`` (an env uid) or ``python`` (a path),
    else in the one ``find_python`` returns (ckx.software.resolve passes its resolver; without one it is
    a UsageError). Returns a DetectReport whose envs carry the requested tags. Raises UsageError (neither
    soft nor tags), NotFound (nothing found; the hint says where to look), MetaError (a broken soft entry).
    """
    if not soft and not tags:
        raise UsageError("which software? give soft:ALIAS or --tags=...",
                         hint="ckx detect soft:compiler.python | ckx detect soft --tags=lib,python-package,numpy")
    outer = _session or _ACTIVE_SESSION.get()
    session = outer if outer is not None and outer.ctx is ctx else Session(ctx)
    token = _ACTIVE_SESSION.set(session)  # nested detections (a module soft's python dep) share it
    try:
        return _detect(ctx, session, soft, tags=tags, full_path=full_path, search_dirs=search_dirs,
                       search_depth=search_depth, force_version=force_version, extra_tags=extra_tags,
                       python=python, deps=deps, find_python=find_python, outermost=session is not outer)
    finally:
        _ACTIVE_SESSION.reset(token)


def _detect(ctx: Context, session: Session, soft: str | None, *, tags: Any, full_path: Any, search_dirs: Any,
            search_depth: int | None, force_version: str | None, extra_tags: Any, python: str | None,
            deps: Mapping[str, str] | None, find_python: PythonFinder | None, outermost: bool) -> DetectReport:
    include, exclude = split_tags(tags)
    if soft:
        entry = get_soft(ctx, soft)
        if include and not entry.can_provide(include):
            raise UsageError(f"soft {entry.alias} cannot provide tags {','.join(include)} (its tags: "
                             f"{','.join(entry.tags)})")
        softs = [entry]
    else:
        softs = find_softs(ctx, tags)
        if not softs:
            raise NotFound(f"no soft entry can detect tags {','.join(include)}",
                           hint="'ckx search soft --tags=...' lists soft entries; 'ckx install package --tags=...' "
                                "installs packages")
    report = DetectReport(softs=[s.alias for s in softs])
    seen_uids: set[str] = set()
    searched: list[str] = []
    try:
        for entry in softs:
            python_env = None
            if entry.kind == "module":
                python_env = _python_for(ctx, session, entry, python=python, deps=deps or {}, find_python=find_python)
            detector = Detector(
                ctx, session, entry, full_path=str(full_path) if full_path else None,
                search_dirs=split_list(search_dirs), search_depth=search_depth,
                force_version=version_text(force_version), extra_tags=split_list(extra_tags), python_env=python_env,
            )
            searched.append(_where(entry, detector))
            for found in detector.detect():
                record, new = record_env_ex(
                    ctx, soft=entry.alias, version=found.version, full_path=found.full_path, env=found.env,
                    tags=list(entry.tags) + found.tags, extra_tags=detector.extra_tags,
                    env_prefix=entry.env_prefix, deps=found.deps, name=entry.name, detected_by=entry.kind,
                    extra_meta=found.extra_meta,
                )
                if record.uid in seen_uids:
                    continue
                seen_uids.add(record.uid)
                if all(t in record.tags for t in include) and not any(t in record.tags for t in exclude):
                    report.envs.append(record)
                    report.new.append(new)
    finally:
        if outermost:
            session.save_cache()
        report.subprocesses = session.subprocesses
    if not report.envs:
        what = f"soft {soft}" if soft else f"tags {tags if isinstance(tags, str) else ','.join(tags or ())}"
        raise NotFound(f"{what}: nothing found ({'; '.join(searched)})", hint=_hint(softs, tags))
    return report


def _where(entry: SoftEntry, detector: Detector) -> str:
    kind = entry.kind
    if detector.full_path:
        return f"{entry.alias}: {detector.full_path}"
    if kind == "module":
        return f"{entry.alias}: module {entry.detect['module']} in {detector._python_path()}"
    if kind == "marker":
        dirs = detector.search_dirs or entry.detect.get("search_dirs") or []
        existing = [d for d in expand_dirs(dirs) if os.path.isdir(d)]
        if not existing:
            return f"{entry.alias}: no search directory exists ({', '.join(dirs) or 'none given'})"
        return f"{entry.alias}: {entry.detect['files'][0]} under {', '.join(existing)}"
    if kind == "executable":
        return f"{entry.alias}: {', '.join(entry.detect['names'])} on PATH"
    return f"{entry.alias}: python interpreters"


def _hint(softs: Sequence[SoftEntry], tags: Any) -> str:
    kinds = {s.kind for s in softs}
    parts = []
    if "marker" in kinds:
        parts.append("pass --search_dir=DIR (and --search_depth=N) or --full_path=PATH")
    if "executable" in kinds or "python" in kinds:
        parts.append("pass --full_path=PATH if it is not on PATH")
    if "module" in kinds:
        parts.append("install it into that interpreter, pick another with --python=PATH, or "
                     "'ckx install package --tags=...'")
    return "; ".join(parts) or "'ckx install package --tags=...' installs packages"


def detect_soft(
    ctx: Context,
    soft: str | None = None,
    *,
    tags: str | Sequence[str] | None = None,
    full_path: str | os.PathLike | None = None,
    search_dirs: Sequence[str] | str = (),
    search_depth: int | None = None,
    force_version: str | None = None,
    extra_tags: Sequence[str] | str = (),
    python: str | None = None,
    deps: Mapping[str, str] | None = None,
) -> list[EnvRecord]:
    """Detect and record; the envs found (see ``detect``). ``python`` is the interpreter module softs look in."""
    return detect(ctx, soft, tags=tags, full_path=full_path, search_dirs=search_dirs, search_depth=search_depth,
                  force_version=force_version, extra_tags=extra_tags, python=python, deps=deps).envs
