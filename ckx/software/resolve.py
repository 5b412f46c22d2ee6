"""Dependency resolution: an existing env, else detection by a soft entry, else installing a package.

This module orchestrates: detection (ckx.software.detect) and installation (ckx.software.install) take
dependencies already resolved, and the entry points that need resolution (``detect`` for a module soft's
interpreter, ``install`` for a package's deps) are here, with the one guard against dependency cycles.

A dependency is a dict: ``{"tags": "lib,python-package,numpy", "version_from": [1, 24] | "1.24",
"version_to": [...], "version": ">=1.24,<3", "names": [...], "sort": 10, "skip_if_env": ["VAR"],
"enable_if_env": {"VAR": ["v1", ...]}, "offline_tags": "...", "no_tags": "a,b"}``.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from ckx.core.errors import CkxError, MetaError, NotFound, ResolutionError
from ckx.software import detect as detection
from ckx.software import install as installer
from ckx.software.envs import EnvRecord, ResolvedDep, find_envs, load_env, sort_newest_first
from ckx.software.versions import VersionRange
from ckx.software.install import InstallResult
from ckx.software.packages import choose_package, find_candidates
from ckx.software.softs import SoftEntry, find_softs
from ckx.store.context import Context
from ckx.store.index import split_tags

log = logging.getLogger(__name__)

PYTHON_SOFT = "compiler.python"
# The packages being installed further up this call chain: a repeat is a dependency cycle, which would
# otherwise wait forever on its own package lock.
_INSTALLING: ContextVar[tuple[str, ...]] = ContextVar("ckx_installing_packages", default=())


def dep_order(deps: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    """Dependencies by their ``sort`` (then name); MetaError for one that is not an object with tags."""
    items = []
    for name, spec in deps.items():
        if not isinstance(spec, Mapping):
            raise MetaError(f"dependency {name!r} must be an object with 'tags', not {type(spec).__name__}")
        if not spec.get("tags") and not spec.get("offline_tags"):
            raise MetaError(f"dependency {name!r} has no 'tags'")
        try:
            order = float(spec.get("sort", 0) or 0)
        except (TypeError, ValueError):
            raise MetaError(f"dependency {name!r}: 'sort' must be a number, not {spec.get('sort')!r}") from None
        items.append((order, str(name), spec))
    items.sort(key=lambda item: (item[0], item[1]))
    return [(name, spec) for _, name, spec in items]


def _tag_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    return [str(t).strip() for t in value if str(t).strip()]


def _lookup(mapping: Mapping[str, Any], name: str, spec: Mapping[str, Any]) -> Any:
    """``mapping[name]``, or the value under one of the dep's other ``names``."""
    if name in mapping:
        return mapping[name]
    names = spec.get("names") or []
    if isinstance(names, str):
        names = [names]
    for other in names:
        if other in mapping:
            return mapping[other]
    return None


def _enabled(spec: Mapping[str, Any], environment: Mapping[str, str]) -> bool:
    """CK's ``enable_if_env``: every named variable is set (to one of the listed values, when listed)."""
    condition = spec.get("enable_if_env")
    if not condition:
        return True
    if isinstance(condition, (list, tuple, str)):
        names = [condition] if isinstance(condition, str) else list(condition)
        return all(environment.get(str(n)) for n in names)
    for key, allowed in dict(condition).items():
        value = environment.get(str(key))
        if value is None:
            return False
        if allowed in (None, True, [], ""):
            continue
        choices = allowed if isinstance(allowed, (list, tuple)) else [allowed]
        if str(value).lower() not in {str(c).lower() for c in choices}:
            return False
    return True


def _same_interpreter(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    return os.path.normpath(a) == os.path.normpath(b)


def _affinity(record: EnvRecord, python_env: EnvRecord | None) -> int:
    """0: built for the chosen interpreter; 1: not tied to one; 2: tied to another interpreter."""
    if python_env is None:
        return 1
    bound_uid = record.deps.get("python")
    bound_path = record.meta.get("python")
    if not bound_uid and not bound_path:
        return 1
    if bound_uid == python_env.uid or _same_interpreter(bound_path, python_env.full_path):
        return 0
    return 2


def _is_running_interpreter(record: EnvRecord) -> bool:
    if record.soft != PYTHON_SOFT or not record.full_path:
        return False
    prefix = record.meta.get("python_prefix")
    if prefix and os.path.normpath(prefix) != os.path.normpath(sys.prefix):
        return False
    return os.path.realpath(record.full_path) == os.path.realpath(sys.executable)


class _Resolver:
    def __init__(self, ctx: Context, *, add_tags: Mapping[str, Any], forced: Mapping[str, str], offline: bool,
                 installed_only: bool, environment: Mapping[str, str]) -> None:
        self.ctx = ctx
        self.add_tags = add_tags
        self.forced = forced
        self.offline = offline
        self.installed_only = installed_only
        self.environment = dict(environment)
        self.provided: set[str] = set()
        self.python_env: EnvRecord | None = None
        self._warned: set[str] = set()

    def resolve(self, name: str, spec: Mapping[str, Any]) -> ResolvedDep | None:
        skip = spec.get("skip_if_env") or []
        skip = [skip] if isinstance(skip, str) else list(skip)
        provider = next((v for v in skip if v in self.provided), None)
        if provider:
            self.ctx.info(f"dependency {name}: skipped, {provider} is already provided")
            return None
        if not _enabled(spec, self.environment):
            log.debug("dependency %s: disabled by enable_if_env", name)
            return None
        forced_uid = _lookup(self.forced, name, spec)
        if forced_uid:
            record = self._forced(name, spec, str(forced_uid))
            return self._done(name, record, "forced")
        tags_value = spec.get("offline_tags") if self.offline and spec.get("offline_tags") else spec.get("tags")
        include, exclude = split_tags(_tag_list(tags_value) + _tag_list(_lookup(self.add_tags, name, spec)))
        exclude = tuple(dict.fromkeys(exclude + tuple(_tag_list(spec.get("no_tags")))))
        bounds = VersionRange.from_spec(spec, where=f"dependency {name}")
        if bounds.is_empty():
            raise ResolutionError(f"dependency {name}: version_from {bounds.low} is above version_to {bounds.high}; "
                                  "nothing can satisfy it")
        label = f"dependency {name} (tags {','.join(include)}" + (f", version {bounds}" if bounds else "") + ")"
        record = self._existing(name, include, exclude, bounds)
        if record is not None:
            return self._done(name, record, "env")
        record = self._detected(name, include, exclude, bounds)
        if record is not None:
            return self._done(name, record, "detected")
        if self.installed_only:
            raise ResolutionError(f"{label}: no recorded env matches and no soft entry detects it",
                                  hint=self._hint(include))
        record = self._installed(name, label, include, exclude, bounds)
        return self._done(name, record, "installed")

    # the steps ----------------------------------------------------------------------------------
    def _forced(self, name: str, spec: Mapping[str, Any], uid: str) -> EnvRecord:
        try:
            record = load_env(self.ctx, uid)
        except NotFound:
            raise ResolutionError(f"dependency {name}: --deps.{name}={uid} names no recorded env",
                                  hint="'ckx show env' lists the envs and their uids") from None
        include, _ = split_tags(_tag_list(spec.get("tags")))
        missing = [t for t in include if t not in record.tags]
        if missing:
            self.ctx.warn(f"dependency {name}: the forced env {uid} lacks tags {','.join(missing)}; using it anyway")
        return record

    def _candidates(self, include: Sequence[str], exclude: Sequence[str], bounds: VersionRange) -> list[EnvRecord]:
        records = find_envs(self.ctx, tags=list(include) + [f"-{t}" for t in exclude])
        usable = []
        for record in records:
            if not bounds.contains(record.version):
                continue
            if not record.is_present():
                if record.uid not in self._warned:
                    self._warned.add(record.uid)
                    self.ctx.warn(f"env {record.uid} ({record.soft or record.package}) points to "
                                  f"{record.full_path or record.install_dir}, which is gone; ignoring it "
                                  f"('ckx rm env:{record.uid} --force' removes it)")
                continue
            affinity = _affinity(record, self.python_env)
            if affinity == 2:
                continue
            usable.append((affinity, record))
        ordered = sort_newest_first(r for _, r in usable)
        rank = {r.uid: a for a, r in usable}
        ordered.sort(key=lambda r: (rank[r.uid], 0 if _is_running_interpreter(r) else 1))
        return ordered

    def _existing(self, name: str, include: Sequence[str], exclude: Sequence[str],
                  bounds: VersionRange) -> EnvRecord | None:
        candidates = self._candidates(include, exclude, bounds)
        if not candidates:
            return None
        chosen = candidates[0]
        if len(candidates) > 1:
            others = ", ".join(f"{r.uid} ({r.version or '?'})" for r in candidates[1:4])
            self.ctx.info(f"dependency {name}: {len(candidates)} envs match; using {chosen.uid} "
                          f"({chosen.soft or chosen.package} {chosen.version or ''}".rstrip() + f"); others: {others}; "
                          f"choose with --deps.{name}=UID")
        return chosen

    def _detected(self, name: str, include: Sequence[str], exclude: Sequence[str],
                  bounds: VersionRange) -> EnvRecord | None:
        softs = [s for s in find_softs(self.ctx, list(include)) if not any(t in s.tags for t in exclude)]
        attempted = False
        for soft in softs:
            deps = {"python": self.python_env.uid} if self.python_env and soft.kind == "module" else None
            try:
                detect(self.ctx, soft.alias, deps=deps)
                attempted = True
            except NotFound as exc:
                log.debug("dependency %s: %s", name, exc)
            except MetaError:
                raise
            except CkxError as exc:
                self.ctx.warn(f"dependency {name}: detection with soft {soft.alias} failed: {exc}")
        if not attempted:
            return None
        return self._existing(name, include, exclude, bounds)

    def _installed(self, name: str, label: str, include: Sequence[str], exclude: Sequence[str],
                   bounds: VersionRange) -> EnvRecord:
        packages = matching_packages(self.ctx, include, exclude)
        if not packages:
            raise ResolutionError(f"{label}: no recorded env, no soft entry and no package provides it",
                                  hint=self._hint(include))
        key = ",".join(sorted(include) + [f"-{t}" for t in sorted(exclude)])
        record = install(self.ctx, tags=key, offline=self.offline).env
        if not bounds.contains(record.version):
            raise ResolutionError(
                f"{label}: package {record.package} installed version {record.version or '(unknown)'}, "
                f"outside {bounds}",
                hint="pick a package variation or version inside the range (ckx install package:ALIAS --version=V)",
            )
        return record

    def _done(self, name: str, record: EnvRecord, origin: str) -> ResolvedDep:
        if record.soft == PYTHON_SOFT and self.python_env is None:
            self.python_env = record
        self.provided.update(record.env)
        self.environment.update(record.env)
        log.debug("dependency %s -> env %s (%s)", name, record.uid, origin)
        return ResolvedDep.from_env(name, record, origin)

    def _hint(self, include: Sequence[str]) -> str:
        tags = ",".join(include)
        return (f"'ckx detect soft --tags={tags}' detects it, 'ckx install package --tags={tags}' installs it, "
                "or give an env with --deps.NAME=UID")


def matching_packages(ctx: Context, include: Sequence[str], exclude: Sequence[str] = ()) -> list[str]:
    """Names of the packages that ``ckx install`` would choose among for these tags (its own matcher:
    the merged meta, base entries included, alone or with one variation's tags)."""
    tags = list(include) + [f"-{t}" for t in exclude]
    return list(dict.fromkeys(candidate.name for candidate in find_candidates(ctx, tags=tags)))


def resolve_deps(
    ctx: Context,
    deps: Mapping[str, Mapping[str, Any]],
    *,
    add_tags: Mapping[str, Any] | None = None,
    forced: Mapping[str, str] | None = None,
    offline: bool = False,
    installed_only: bool = False,
    env: Mapping[str, str] | None = None,
) -> list[ResolvedDep]:
    """Resolve each dependency to an env, in ``sort`` order.

    For each: skipped when ``skip_if_env`` names a variable an earlier dep provides, or when
    ``enable_if_env`` does not hold in ``env`` (default os.environ) plus earlier deps' variables;
    ``forced[name]`` (an env uid, from ``--deps.NAME=UID``) wins outright; ``add_tags[name]``
    (``--dep_add_tags.NAME=x,y``) narrows the tags; with ``offline``, ``offline_tags`` replace the tags.
    Then: a recorded env that matches (tied to the resolved Python, newest version, most recent),
    else what a soft entry detects, else (unless ``installed_only``) the package installed for those tags.

    Raises ResolutionError (exit 4) for an unsatisfiable dependency, a cycle or a version conflict,
    naming the dependency and the entries; MetaError for a malformed dependency.
    """
    resolver = _Resolver(ctx, add_tags=add_tags or {}, forced=forced or {}, offline=offline,
                         installed_only=installed_only, environment=os.environ if env is None else env)
    resolved = []
    for name, spec in dep_order(deps):
        dep = resolver.resolve(name, spec)
        if dep is not None:
            resolved.append(dep)
    return resolved


# -- detection and installation, with their dependencies resolved ------------------------------------
def _find_python(ctx: Context, soft: SoftEntry, forced: Mapping[str, str]) -> EnvRecord:
    """The interpreter a module soft looks in: its ``python`` dependency among recorded or detected envs."""
    spec = soft.meta.get("deps") or detection.DEFAULT_PYTHON_DEP
    python_specs = {k: v for k, v in spec.items() if k == "python"} or detection.DEFAULT_PYTHON_DEP
    resolved = resolve_deps(ctx, python_specs, forced=dict(forced), installed_only=True)
    return load_env(ctx, resolved[0].env_uid)


def detect(ctx: Context, soft: str | None = None, **options: Any) -> detection.DetectReport:
    """``ckx.software.detect.detect`` (same options), a module soft's interpreter resolved when none is given:
    a recorded compiler.python env (tied to ``deps["python"]`` when forced), else one detected now."""
    return detection.detect(ctx, soft, find_python=_find_python, **options)


def detect_soft(ctx: Context, soft: str | None = None, **options: Any) -> list[EnvRecord]:
    """Detect and record (see ``detect``); the envs found."""
    return detect(ctx, soft, **options).envs


def install(
    ctx: Context,
    *,
    tags: str | Sequence[str] | None = None,
    alias: str | None = None,
    variation: str | None = None,
    version: str | None = None,
    local_path: str | os.PathLike[str] | None = None,
    offline: bool = False,
    force: bool = False,
    repo: str | None = None,
) -> InstallResult:
    """Choose, install and record one package (the steps are in ckx.software.install's doc).

    Under the package's lock: nothing to do when it is installed already (unless ``force``); else its
    deps are resolved (``resolve_deps``, which may install packages in turn) and it is installed with them.
    ``local_path`` and ``offline`` are those of ``installer.install_resolved``.

    Raises UsageError (neither tags nor alias), NotFound, Ambiguous (exit 3), ResolutionError (4, also
    for a dependency cycle), ChecksumMismatch / UnsafeArchive (5), DownloadError (1), MetaError for a
    broken package, CkxError for a failed pip or hook.
    """
    candidate = choose_package(ctx, tags=tags, alias=alias, variation=variation, version=version, repo=repo)
    chain = _INSTALLING.get()
    if candidate.label in chain:
        raise ResolutionError("dependency cycle: " + " -> ".join(chain + (candidate.label,)),
                              hint="one of these packages must not depend (even indirectly) on itself")
    token = _INSTALLING.set(chain + (candidate.label,))
    try:
        with installer.package_lock(ctx, candidate):
            previous = installer.previous_installations(ctx, candidate, version=version)
            if previous and not force:
                return installer.already_installed(ctx, candidate, previous[0])
            resolved = resolve_deps(ctx, candidate.meta.get("deps") or {}, offline=offline)
            return installer.install_resolved(ctx, candidate, resolved=resolved, previous=previous, version=version,
                                              local_path=local_path, offline=offline, force=force)
    finally:
        _INSTALLING.reset(token)


def install_package(ctx: Context, **options: Any) -> EnvRecord:
    """``install`` (same options), returning the env record only."""
    return install(ctx, **options).env


__all__ = ["PYTHON_SOFT", "ResolvedDep", "dep_order", "detect", "detect_soft", "install", "install_package",
           "matching_packages", "resolve_deps"]
