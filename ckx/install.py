"""Installing packages: choose one, resolve its deps, fill a staging directory, move it into tools, record the env.

How an installation goes (``install``)
    1. The package is chosen from its tags (a variation's tags count too); an ambiguous choice takes
       the default variation, or the package marked ``"default": true``, and says so; otherwise the
       user is asked on a terminal, and Ambiguous (exit 3) lists the candidates everywhere else.
    2. A per-package file lock in ``$CKX_HOME/locks`` serialises installations of one package, so two
       concurrent ``ckx install`` runs end with one env: the second finds the first's and stops there.
    3. Already installed (an env of this package with the same tags and version whose directory is
       still there): nothing to do, and that is said. A pip package whose module the target
       interpreter already imports (its soft entry detects it, at a version the requirement accepts)
       is recorded as found rather than installed again. ``force`` installs anyway.
    4. The package's own deps are resolved (ckx.resolve); the hook and pip run with their env vars.
    5. Everything is written into ``tools/.staging-<package uid>-<random>``: the verified download
       (unpacked safely when asked), or ``pip install --target``, then the ``install.py`` hook.
    6. The staging directory is renamed (``os.replace``) to
       ``tools/<alias>-<variation>-<version>-<short uid>`` and the env is recorded with the package's
       env vars, ``{install_dir}`` substituted. A failure at any step removes the staging or final
       directory, so no env and no half-installed directory remain; only a download's ``.part`` file
       stays in the cache, for a network failure that a later run can resume.

Install hooks (``install.py`` in the package entry) are loaded and validated before anything runs:
exactly one public function, ``install``, with exactly the keyword-only parameters of
``HOOK_PARAMETERS``; helpers and imports must be private (a leading underscore).
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from .cid import Cid
from .context import Context
from .entry import deep_merge, normalise_tags, validate_meta
from .errors import (Ambiguous, ChecksumMismatch, CkxError, DownloadError, IntegrityError, MetaError, NotFound,
                     ResolutionError, UsageError)
from .generic import find_entries, merged_meta
from .hooks import load_source_module
from .inputs import as_bool
from .index import EntryRecord, Query, split_tags

if TYPE_CHECKING:
    from .envs import EnvRecord
    from .resolve import ResolvedDep

log = logging.getLogger(__name__)

HOOK_FILE = "install.py"
HOOK_FUNCTION = "install"
HOOK_PARAMETERS: tuple[str, ...] = (
    "install_dir", "package_dir", "meta", "variation", "env", "python", "downloaded", "info",
)
PIP_ARGS_ENV = "CKX_PIP_ARGS"
PIP_TIMEOUT_S = 3600.0
IMPORT_CHECK_TIMEOUT_S = 300.0
LOCK_TIMEOUT_S = 6 * 3600.0
STAGING_PREFIX = ".staging-"
SOURCE_KINDS = ("download", "pip", "hook")

# Packages being installed further up this call chain: a repeat is a dependency cycle, which would
# otherwise wait forever on its own package lock.
_INSTALLING: ContextVar[tuple[str, ...]] = ContextVar("ckx_installing_packages", default=())


# --------------------------------------------------------------------------- choosing a package


@dataclass(frozen=True)
class Candidate:
    """One installable choice: a package entry with one of its variations (or none) applied."""

    record: EntryRecord
    variation: str | None
    meta: dict
    tags: tuple[str, ...]
    is_default_variation: bool = False

    @property
    def name(self) -> str:
        """The package's alias (its uid when it has none): what env records call the package."""
        return self.record.alias or self.record.uid or self.record.path.name

    @property
    def version(self) -> str | None:
        value = self.meta.get("version")
        return None if value is None else str(value)

    @property
    def label(self) -> str:
        """``repo:package:alias`` plus the variation, for messages."""
        return self.record.cid + (f" (variation {self.variation})" if self.variation else "")


def apply_variation(base: dict, variation: str | None) -> dict:
    """The package meta with one variation deep-merged over it; the variation's tags are appended.

    Raises NotFound when the package has no such variation.
    """
    meta = {key: value for key, value in base.items() if key != "variations"}
    if variation is None:
        return meta
    variations = base.get("variations") or {}
    if variation not in variations:
        known = ", ".join(sorted(variations)) or "none"
        name = base.get("alias") or base.get("uid")
        raise NotFound(f"package {name} has no variation {variation!r} (it has: {known})")
    spec = dict(variations[variation])
    extra_tags = normalise_tags(spec.pop("tags", None))
    spec.pop("default", None)
    merged = deep_merge(meta, spec)
    merged["tags"] = normalise_tags(list(normalise_tags(meta.get("tags"))) + extra_tags)
    return merged


def find_candidates(
    ctx: Context,
    *,
    tags: str | Sequence[str] | None = None,
    alias: str | None = None,
    repo: str | None = None,
    variation: str | None = None,
    version: str | None = None,
) -> list[Candidate]:
    """Every (package, variation) whose tags include ``tags`` (``-tag`` excludes), in registry order.

    ``alias`` (an alias, uid or wildcard) and ``repo`` narrow the packages; ``variation`` keeps only
    that variation; ``version`` keeps packages of that version (pip packages without a fixed
    version accept any: the version becomes their pin). Broken package metas are skipped with a warning.
    """
    include, exclude = split_tags(tags)
    records = find_entries(ctx, Cid(module="package", entry=alias, repo=repo))
    found: list[Candidate] = []
    for record in records:
        try:
            base = merged_meta(ctx, record)
        except CkxError as exc:
            ctx.warn(f"skipping package {record.cid}: {exc}")
            continue
        variations = base.get("variations") or {}
        names: list[str | None]
        if variation is not None:
            names = [variation] if variation in variations else []
        else:
            names = list(variations) or [None]
        for name in names:
            meta = apply_variation(base, name)
            candidate_tags = tuple(normalise_tags(meta.get("tags")))
            if not set(include) <= set(candidate_tags) or set(exclude) & set(candidate_tags):
                continue
            spec = (variations.get(name) or {}) if name else {}
            default = name is not None and (base.get("default_variation") == name or bool(spec.get("default")))
            candidate = Candidate(record, name, meta, candidate_tags, default)
            if version is not None and not _version_accepts(candidate, version):
                continue
            found.append(candidate)
    return found


def _version_accepts(candidate: Candidate, version: str) -> bool:
    if candidate.version is None:
        return (candidate.meta.get("source") or {}).get("kind") == "pip"
    return _same_version(candidate.version, version)


def _same_version(a: str, b: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def choose_candidate(ctx: Context, candidates: Sequence[Candidate], *, asked: str) -> Candidate:
    """One candidate: the only one, the default one (said with ctx.info), the user's pick, or Ambiguous.

    ``asked`` describes the request for messages (e.g. ``tags lib,python-package``).
    """
    if not candidates:
        raise NotFound(f"no package matches {asked}", hint="'ckx search package --tags=...' lists packages by tags")
    if len(candidates) == 1:
        return candidates[0]
    pool = list(candidates)
    packages = list(dict.fromkeys(c.record.path for c in pool))
    if len(packages) > 1:
        marked = [path for path in packages if any(c.record.path == path and c.meta.get("default") for c in pool)]
        if len(marked) == 1:
            pool = [c for c in pool if c.record.path == marked[0]]
    if len({c.record.path for c in pool}) == 1:
        if len(pool) == 1:
            ctx.info(f"{asked} matches several packages; using {pool[0].label}, marked as the default")
            return pool[0]
        defaults = [c for c in pool if c.is_default_variation]
        if len(defaults) == 1:
            ctx.info(f"{asked} matches {len(pool)} variations of {pool[0].record.cid}; "
                     f"using the default variation {defaults[0].variation}")
            return defaults[0]
    labels = [f"{c.label} [{','.join(c.tags)}]" for c in candidates]
    if ctx.interactive:
        picked = ctx.reporter.choose(f"{asked} matches several packages; which one?", labels, None)
        if picked is not None and 0 <= picked < len(candidates):
            return candidates[picked]
    count = len({c.record.path for c in candidates})
    raise Ambiguous(
        f"{asked} matches {count} package{'s' if count > 1 else ''}"
        + (f" ({len(candidates)} variations)" if len(candidates) > count else ""),
        labels,
        hint="add tags or --variation=NAME to choose one, or name it: ckx install package:ALIAS",
    )


# --------------------------------------------------------------------------- install hooks


def load_hook(path: Path) -> Callable[..., Any]:
    """Load an ``install.py`` and return its ``install`` function, validated against the contract.

    Raises MetaError naming the file when it cannot be imported, when it defines any other public
    name, or when ``install`` is missing or its parameters are not exactly ``HOOK_PARAMETERS``
    (keyword-only, no defaults needed).
    """
    path = Path(path)
    module_name = f"_ckx_install_hook_{secrets.token_hex(6)}"
    try:
        module = load_source_module(path, module_name)
    except CkxError:
        raise
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        log.debug("loading %s failed", path, exc_info=True)
        raise MetaError(f"{path}: the install hook fails to load: {type(exc).__name__}: {exc}") from exc
    public = sorted(name for name, value in vars(module).items()
                    if not name.startswith("_") and name != HOOK_FUNCTION and not _is_future_feature(value))
    if public:
        raise MetaError(
            f"{path}: an install hook defines one public function, '{HOOK_FUNCTION}'; "
            f"also found: {', '.join(public)}",
            hint="make helpers and imports private with a leading underscore (import os as _os)",
        )
    function = getattr(module, HOOK_FUNCTION, None)
    if not inspect.isfunction(function):
        raise MetaError(f"{path}: no function '{HOOK_FUNCTION}' (the hook's one public name)")
    _check_hook_signature(path, function)
    return function


def _is_future_feature(value: object) -> bool:
    import __future__

    return isinstance(value, __future__._Feature)


def _check_hook_signature(path: Path, function: Callable[..., Any]) -> None:
    parameters = inspect.signature(function).parameters
    names = tuple(parameters)
    wrong_kind = [n for n, p in parameters.items() if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    missing = [n for n in HOOK_PARAMETERS if n not in parameters]
    unknown = [n for n in names if n not in HOOK_PARAMETERS]
    problems = []
    if missing:
        problems.append("missing " + ", ".join(missing))
    if unknown:
        problems.append("unknown " + ", ".join(unknown))
    if wrong_kind:
        problems.append("not keyword-only: " + ", ".join(wrong_kind))
    if problems:
        raise MetaError(
            f"{path}: {HOOK_FUNCTION}() does not have the hook signature ({'; '.join(problems)})",
            hint="def install(*, " + ", ".join(HOOK_PARAMETERS) + ") -> dict[str, str] | None",
        )


def run_hook(
    function: Callable[..., Any], path: Path, *, install_dir: Path, package_dir: Path, meta: dict,
    variation: str | None, env: dict[str, str], python: str, downloaded: Path | None, info: Callable[[str], None],
) -> dict[str, str]:
    """Call a loaded hook; its extra env vars (values as strings) come back.

    A CkxError raised by the hook passes through; any other exception becomes a CkxError naming
    the hook (the traceback goes to the debug log). A return value that is not a mapping of
    variable names to strings, numbers or booleans is a MetaError.
    """
    try:
        result = function(install_dir=install_dir, package_dir=package_dir, meta=meta, variation=variation,
                          env=env, python=python, downloaded=downloaded, info=info)
    except CkxError:
        raise
    except Exception as exc:
        log.debug("install hook %s failed", path, exc_info=True)
        raise CkxError(f"install hook {path} failed: {type(exc).__name__}: {exc}",
                       hint="nothing was installed; run with CKX_DEBUG=1 for the traceback") from exc
    if result is None:
        return {}
    if not isinstance(result, Mapping):
        raise MetaError(f"{path}: {HOOK_FUNCTION}() returned {type(result).__name__}, not a dict of env vars or None")
    extra: dict[str, str] = {}
    for key, value in result.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise MetaError(f"{path}: {HOOK_FUNCTION}() returned an invalid env var name {key!r}")
        if not isinstance(value, (str, int, float, bool)):
            raise MetaError(f"{path}: {HOOK_FUNCTION}() returned {type(value).__name__} for {key}, not a string")
        extra[key] = _env_text(value)
    return extra


# --------------------------------------------------------------------------- the installation


@dataclass(frozen=True)
class InstallResult:
    """What ``install`` did: ``status`` is "installed", "already-installed" or "already-available"."""

    env: "EnvRecord"
    status: str
    candidate: Candidate


def install_package(
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
) -> "EnvRecord":
    """Install the package that ``alias`` and/or ``tags`` name and return its env record.

    A no-op that says so (with ctx.info) when it is installed already, or, for a pip package,
    already importable by the target interpreter; ``force`` installs it regardless. See ``install``.
    """
    return install(ctx, tags=tags, alias=alias, variation=variation, version=version, local_path=local_path,
                   offline=offline, force=force, repo=repo).env


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
    """Choose, install and record one package (the steps are in the module doc).

    ``local_path`` is a file already on disk used instead of downloading (its checksum is still
    verified); for pip packages a wheel or sdist file, or a directory of them (``--no-index
    --find-links DIR``). ``offline`` never touches the network for downloads.

    Raises UsageError (neither tags nor alias), NotFound, Ambiguous (exit 3), ResolutionError (4),
    ChecksumMismatch / UnsafeArchive (5), DownloadError (1, with the ways forward in its hint),
    MetaError for a broken package, CkxError for a failed pip or hook.
    """
    if not tags and not alias:
        raise UsageError("which package? give its alias or --tags",
                         hint="ckx install package:ALIAS | ckx install package --tags=a,b")
    asked = " ".join(filter(None, [f"package:{alias}" if alias else "", f"tags {_tag_text(tags)}" if tags else ""]))
    if variation:
        asked += f" variation {variation}"
    candidate = choose_candidate(
        ctx, find_candidates(ctx, tags=tags, alias=alias, repo=repo, variation=variation, version=version),
        asked=asked,
    )
    source = candidate.meta.get("source")
    if not isinstance(source, dict) or source.get("kind") not in SOURCE_KINDS:
        raise MetaError(
            f"{candidate.record.meta_path}: field 'source': package {candidate.label} says nothing ckx can install "
            f"(source.kind must be one of {', '.join(SOURCE_KINDS)})"
        )
    validate_meta(candidate.meta, "package", candidate.record.meta_path)
    chain = _INSTALLING.get()
    if candidate.label in chain:
        raise ResolutionError("dependency cycle: " + " -> ".join(chain + (candidate.label,)),
                              hint="one of these packages must not depend (even indirectly) on itself")
    token = _INSTALLING.set(chain + (candidate.label,))
    try:
        with _package_lock(ctx, candidate):
            return _Installation(ctx, candidate, version=version, local_path=local_path,
                                 offline=offline, force=force).run()
    finally:
        _INSTALLING.reset(token)


def _tag_text(tags: str | Sequence[str] | None) -> str:
    return tags if isinstance(tags, str) else ",".join(tags or ())


@contextlib.contextmanager
def _package_lock(ctx: Context, candidate: Candidate) -> Iterator[None]:
    """Hold ``$CKX_HOME/locks/package-<uid>.lock``; say so when another installation holds it."""
    import filelock

    ctx.home.ensure()
    path = ctx.home.locks / f"package-{candidate.record.uid or candidate.name}.lock"
    lock = filelock.FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        ctx.info(f"waiting for another installation of {candidate.label} to finish (lock {path})")
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_S)
        except filelock.Timeout:
            raise CkxError(f"another installation of {candidate.label} still holds {path}",
                           hint="if no ckx process is running, delete the lock file") from None
    try:
        yield
    finally:
        lock.release()


class _Installation:
    """One installation of one chosen candidate (the steps share this state)."""

    def __init__(self, ctx: Context, candidate: Candidate, *, version: str | None,
                 local_path: str | os.PathLike[str] | None, offline: bool, force: bool) -> None:
        self.ctx = ctx
        self.candidate = candidate
        self.meta = candidate.meta
        self.source: dict = dict(candidate.meta["source"])
        self.requested_version = version
        self.local_path = Path(local_path).expanduser() if local_path else None
        self.offline = offline
        self.force = force
        self.stage: Path | None = None
        self.final: Path | None = None
        self.python: str | None = None
        self.main_file: str | None = None  # a download kept as one file: the env's full_path

    # -- the steps ------------------------------------------------------------------------------
    def run(self) -> InstallResult:
        ctx, candidate = self.ctx, self.candidate
        ctx.index.refresh(["env"], force=True)  # another process may have recorded it while we waited
        previous = installed_envs(ctx, candidate, version=self.requested_version)
        if previous and not self.force:
            env = previous[0]
            ctx.info(f"{candidate.label} {env.version or ''} is already installed in {env.install_dir} "
                     f"(env {env.uid}); nothing to do (--force installs it again)".replace("  ", " "))
            return InstallResult(env, "already-installed", candidate)
        resolved = self._resolve_deps()
        python, python_env = _python_of(resolved)
        if self.source["kind"] == "pip" and not self.force and self.local_path is None:
            available = self._already_available(python, python_env)
            if available is not None:
                return InstallResult(available, "already-available", candidate)
        self.python = python
        env = self._install(resolved, python)
        if previous:
            self._replace(previous)
        return InstallResult(env, "installed", candidate)

    def _resolve_deps(self) -> list["ResolvedDep"]:
        deps = self.meta.get("deps") or {}
        if not deps:
            return []
        from .resolve import resolve_deps

        return list(resolve_deps(self.ctx, deps, offline=self.offline))

    def _install(self, resolved: list["ResolvedDep"], python: str) -> "EnvRecord":
        ctx, candidate = self.ctx, self.candidate
        tools = ctx.home.tools
        tools.mkdir(parents=True, exist_ok=True)
        self._remove_abandoned_stages(tools)
        self.stage = tools / f"{STAGING_PREFIX}{candidate.record.uid or candidate.name}-{secrets.token_hex(4)}"
        self.stage.mkdir()
        try:
            env = dependency_environment(resolved)
            ctx.info(f"installing {candidate.label} into {tools}")
            downloaded, version, extra = self._obtain(env, python)
            hook_path = candidate.record.path / HOOK_FILE
            if hook_path.is_file():
                hook = load_hook(hook_path)
                extra.update(run_hook(
                    hook, hook_path, install_dir=self.stage, package_dir=candidate.record.path, meta=self.meta,
                    variation=candidate.variation, env=env, python=python, downloaded=downloaded, info=ctx.info,
                ))
            elif self.source["kind"] == "hook":
                raise MetaError(f"{candidate.record.path}: source.kind is 'hook' but the package has no {HOOK_FILE}")
            self.final = self._move_into_place(tools, version)
            record = self._record(resolved, version, extra)
        except BaseException:
            self._clean_up()
            raise
        ctx.info(f"installed {candidate.label} {version or ''} into {self.final} (env {record.uid})".replace("  ", " "))
        return record

    def _obtain(self, env: dict[str, str], python: str) -> tuple[Path | None, str | None, dict[str, str]]:
        """Fill the staging directory from the source: (downloaded file, version, extra env vars)."""
        kind = self.source["kind"]
        version = self.candidate.version
        if kind == "download":
            return self._download(), version, {}
        if kind == "pip":
            installed_version = self._pip(env, python)
            return None, installed_version or version, {"PYTHONPATH": "{install_dir}"}
        if self.local_path is not None:
            if not self.source.get("local_dir"):
                raise UsageError(f"{self.candidate.label} is generated by its install hook: --local_path does not apply")
            if not self.local_path.is_dir():
                raise NotFound(f"--local_path {self.local_path} is not a directory", hint="pass the directory to install from")
            return self.local_path, version, {}  # a hook package that takes a directory gets it as ``downloaded``
        return None, version, {}

    # -- download sources -----------------------------------------------------------------------
    def _download(self) -> Path:
        from .checksum import Checker
        from .fetch import (cached_download_path, download_hint, fetch, filename_from_url, load_url_map, local_copy,
                            url_key)
        from .unpack import unpack

        ctx, source, label = self.ctx, self.source, self.candidate.label
        urls = [str(u) for u in source.get("urls") or []]
        if not urls and self.local_path is None:
            raise MetaError(f"{self.candidate.record.meta_path}: field 'source.urls': package {label} has no URL")
        checker = Checker.from_meta(source)
        if checker is None:
            ctx.warn(f"{label} declares no md5 or sha256: the download cannot be verified")
        origin = urls[0] if urls else str(self.local_path)
        filename = source.get("filename") or (filename_from_url(urls[0]) if urls else Path(origin).name)
        dest = cached_download_path(ctx.home, filename, checker.expected if checker else url_key(origin))
        if self.local_path is not None:
            ctx.info(f"using {self.local_path} instead of downloading {filename}")
            try:
                local_copy(self.local_path, dest, checker)
            except ChecksumMismatch as exc:
                exc.hint = f"{self.local_path} is not the file {label} describes; nothing was installed"
                raise
        else:
            ways = self._ways_forward()
            try:
                fetch(urls, dest, checker=checker, reporter=ctx.reporter, offline=self.offline,
                      url_map=load_url_map(ctx.home), extra_hint=ways)
            except ChecksumMismatch as exc:
                exc.hint = "; ".join(filter(None, [exc.hint, download_hint(ways)]))
                raise
            except DownloadError as exc:
                # Callers (ckx run) name the package and variation in their own ways forward.
                exc.package = self.candidate.record.alias
                exc.variation = self.candidate.variation
                raise
        assert self.stage is not None
        if source.get("unpack"):
            ctx.info(f"unpacking {filename}")
            try:
                unpack(dest, self.stage, strip_components=int(source.get("strip_components") or 0))
            except IntegrityError:
                dest.unlink(missing_ok=True)  # unsafe or corrupt: never offer it from the cache again
                raise
        else:
            _link_or_copy(dest, self.stage / filename)
            self.main_file = filename
        return dest

    def _ways_forward(self) -> str | None:
        """The embedded offline alternative to this package, for a download's hint (None when none)."""
        soft = self.meta.get("soft")
        if not soft or self.meta.get("embedded_default"):
            return None
        alternatives = []
        for record in self.ctx.index.query(Query(module="package")):
            meta = record.meta
            if record.path != self.candidate.record.path and meta.get("soft") == soft and meta.get("embedded_default"):
                alternatives.append(record.alias or record.uid)
        if not alternatives:
            return None
        names = ", ".join(f"ckx install package:{a}" for a in alternatives if a)
        return f"or use the embedded default ({names}; 'ckx run program:... --offline' picks it)"

    # -- pip sources ----------------------------------------------------------------------------
    def _pip_requirements(self) -> list[str]:
        requirements = [str(r) for r in self.source.get("requirements") or []]
        if not requirements:
            raise MetaError(f"{self.candidate.record.meta_path}: field 'source.requirements': "
                            f"pip package {self.candidate.label} names no requirement")
        if self.requested_version and self.candidate.version is None:
            from packaging.requirements import InvalidRequirement, Requirement

            try:
                first = Requirement(requirements[0])
            except InvalidRequirement as exc:
                raise MetaError(f"{self.candidate.record.meta_path}: field 'source.requirements': "
                                f"invalid requirement {requirements[0]!r}: {exc}") from exc
            extras = f"[{','.join(sorted(first.extras))}]" if first.extras else ""
            requirements[0] = f"{first.name}{extras}=={self.requested_version}"
        return requirements

    def _pip(self, env: dict[str, str], python: str) -> str | None:
        """``pip install --target STAGE``; check the import; return the installed version."""
        assert self.stage is not None
        requirements = self._pip_requirements()
        args = ["--no-input", "--disable-pip-version-check"]
        if self.source.get("no_deps"):
            args.append("--no-deps")
        args += [str(a) for a in self.source.get("pip_args") or []]
        args += shlex.split(os.environ.get(PIP_ARGS_ENV, ""))
        targets = requirements
        if self.local_path is not None:
            targets = self._local_pip_targets(requirements, args)
        argv = [python, "-m", "pip", "install", "--target", str(self.stage), *args, *targets]
        timeout = float(self.source.get("timeout_s") or PIP_TIMEOUT_S)
        self.ctx.info("running pip install " + " ".join(targets))
        pip_env = dict(env)
        pip_env.pop("PYTHONPATH", None)  # pip itself must run from the interpreter's own site-packages
        _run_checked(argv, env=pip_env, timeout=timeout, what=f"pip install for {self.candidate.label}",
                     hint="check the requirement and pip's registry settings; for a machine without a registry, "
                          "pass a wheel or a directory of wheels with --local_path=PATH")
        version = _installed_version(self.stage, requirements[0])
        import_name = self.source.get("import_name")
        if import_name:
            check_env = dict(env)
            check_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.stage), env.get("PYTHONPATH")]))
            _run_checked([python, "-c", f"import {import_name}"], env=check_env, timeout=IMPORT_CHECK_TIMEOUT_S,
                         what=f"import {import_name} after installing {self.candidate.label}", cwd=self.stage)
        return version

    def _local_pip_targets(self, requirements: list[str], args: list[str]) -> list[str]:
        from .checksum import Checker

        path = self.local_path
        assert path is not None
        if path.is_dir():
            args += ["--no-index", "--find-links", str(path)]
            return requirements
        if not path.is_file():
            raise NotFound(f"local file {path} does not exist", hint="check the --local_path value")
        checker = Checker.from_meta(self.source)
        if checker is not None:
            try:
                checker.check(path)
            except ChecksumMismatch as exc:
                exc.hint = f"{path} is not the file {self.candidate.label} describes; nothing was installed"
                raise
        return [str(path.resolve())]

    def _already_available(self, python: str, python_env: str | None) -> "EnvRecord | None":
        """The env of the soft that already finds this pip package in ``python`` (and accepts its version)."""
        soft = self.meta.get("soft")
        if not soft:
            return None
        found = detect_available(self.ctx, soft, python=python, python_env=python_env)
        if found is None:
            return None
        requirements = self._pip_requirements()
        if not _version_satisfies(found.version, requirements[0]):
            self.ctx.info(f"{python} has {soft} {found.version}, which {requirements[0]} does not accept; installing")
            return None
        self.ctx.info(f"{self.candidate.label}: {soft} {found.version} is already available in {python} "
                      f"(env {found.uid}); not installing it again (--force installs a separate copy)")
        return found

    # -- finishing ------------------------------------------------------------------------------
    def _move_into_place(self, tools: Path, version: str | None) -> Path:
        assert self.stage is not None
        parts = [self.candidate.name, self.candidate.variation, version]
        base = "-".join(_safe_part(p) for p in parts if p)
        for _ in range(10):
            final = tools / f"{base}-{secrets.token_hex(4)}"
            try:
                os.rename(self.stage, final)  # fails when final exists (a non-empty directory)
            except OSError:
                if final.exists():
                    continue
                raise
            self.stage = None
            return final
        raise CkxError(f"cannot find a free directory name for {base} in {tools}")  # pragma: no cover

    def _record(self, resolved: list["ResolvedDep"], version: str | None, extra: dict[str, str]) -> "EnvRecord":
        from .envs import record_env

        assert self.final is not None
        install_dir = str(self.final)
        env = {key: _env_text(value) for key, value in (self.meta.get("env") or {}).items()}
        env.update(extra)
        env = {key: value.replace("{install_dir}", install_dir) for key, value in env.items()}
        full_path = str(self.final / self.main_file) if self.main_file else install_dir
        extra_meta = {"variation": self.candidate.variation, "package_uid": self.candidate.record.uid}
        if self.source["kind"] == "pip":
            extra_meta["python"] = self.python  # the interpreter its modules were installed for
        return record_env(
            self.ctx, soft=self.meta.get("soft"), version=version, full_path=full_path, env=env,
            tags=list(self.candidate.tags), package=self.candidate.name, install_dir=install_dir,
            env_prefix=self.meta.get("env_prefix"), deps={d.name: d.env_uid for d in resolved if d.env_uid},
            name=self.meta.get("name"), detected_by="package", extra_meta=extra_meta,
        )

    def _replace(self, previous: list["EnvRecord"]) -> None:
        """After a forced reinstall, drop the envs and directories of the installation it replaces."""
        from .envs import delete_env

        for old in previous:
            try:
                delete_env(self.ctx, old.uid)
            except CkxError as exc:
                self.ctx.warn(f"could not remove the replaced env {old.uid}: {exc}")
                continue
            if old.install_dir and _inside(Path(old.install_dir), self.ctx.home.tools):
                _remove_tree(Path(old.install_dir))
            self.ctx.info(f"removed the replaced installation {old.install_dir} (env {old.uid})")

    def _clean_up(self) -> None:
        for path in (self.stage, self.final):
            if path is not None:
                _remove_tree(path)
        self.stage = self.final = None

    def _remove_abandoned_stages(self, tools: Path) -> None:
        """Staging directories of this package left by a killed process (we hold the package lock)."""
        prefix = f"{STAGING_PREFIX}{self.candidate.record.uid or self.candidate.name}-"
        for path in tools.glob(prefix + "*"):
            log.info("removing abandoned staging directory %s", path)
            _remove_tree(path)


# --------------------------------------------------------------------------- helpers


def installed_envs(ctx: Context, candidate: Candidate, *, version: str | None = None) -> list["EnvRecord"]:
    """Envs recorded for this package (with this variation's tags) whose directory is still there."""
    from .envs import find_envs

    found = []
    for env in find_envs(ctx, tags=",".join(candidate.tags)):
        if env.package not in (candidate.name, candidate.record.uid):
            continue
        if version is not None and (env.version is None or not _same_version(env.version, version)):
            continue
        if env.install_dir and not Path(env.install_dir).is_dir():
            ctx.warn(f"env {env.uid} of {candidate.label} points to {env.install_dir}, which is gone; ignoring it")
            continue
        found.append(env)
    return found


def detect_available(ctx: Context, soft: str, *, python: str, python_env: str | None = None) -> "EnvRecord | None":
    """Run the soft entry ``soft`` in ``python`` (or the compiler.python env ``python_env``).

    Returns the recorded env when the soft finds the thing, None when it does not (or cannot look).
    """
    from .detect import detect_soft

    try:
        envs = detect_soft(ctx, soft, python=None if python_env else python,
                           deps={"python": python_env} if python_env else None)
    except NotFound:
        return None
    except CkxError as exc:
        ctx.warn(f"could not check whether {soft} is already available: {exc}")
        return None
    return envs[0] if envs else None


def dependency_environment(resolved: Sequence["ResolvedDep"], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default os.environ) with each resolved dep's env vars applied in order (search paths prepended)."""
    from .envs import merge_env

    return merge_env(os.environ if base is None else base, [dep.env or {} for dep in resolved])


def _python_of(resolved: Sequence["ResolvedDep"]) -> tuple[str, str | None]:
    """The interpreter of the resolved compiler.python dep and its env uid; else the running one (no env)."""
    for dep in resolved:
        if dep.soft == "compiler.python" and dep.full_path:
            return str(dep.full_path), dep.env_uid
    return sys.executable, None


def _version_satisfies(version: str | None, requirement: str) -> bool:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion, Version

    try:
        spec = Requirement(requirement).specifier
    except InvalidRequirement:
        return True
    if not str(spec):
        return True
    if version is None:
        return False
    try:
        return spec.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def _installed_version(target: Path, requirement: str) -> str | None:
    """The version pip put into ``target`` for the project of ``requirement`` (from its dist-info)."""
    import importlib.metadata

    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    try:
        wanted = canonicalize_name(Requirement(requirement).name)
    except InvalidRequirement:
        wanted = None
    versions = []
    for dist in importlib.metadata.distributions(path=[str(target)]):
        name = dist.metadata["Name"] or ""
        if wanted is None or canonicalize_name(name) == wanted:
            versions.append(dist.version)
    return versions[0] if len(versions) >= 1 and (wanted is not None or len(versions) == 1) else None


def _run_checked(argv: list[str], *, env: Mapping[str, str], timeout: float, what: str,
                 hint: str | None = None, cwd: Path | None = None) -> None:
    """Run ``argv``; CkxError with the output's last lines when it fails or times out."""
    log.debug("running %s", argv)
    try:
        proc = subprocess.run(argv, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CkxError(f"{what} did not finish within {timeout:.0f} s", hint=hint) from exc
    except OSError as exc:
        raise CkxError(f"cannot run {argv[0]} for {what}: {exc}", hint=hint) from exc
    log.debug("%s output:\n%s", what, proc.stdout)
    if proc.returncode != 0:
        tail = "\n".join(line for line in (proc.stdout or "").splitlines()[-15:] if line.strip())
        raise CkxError(f"{what} failed (exit status {proc.returncode}):\n{tail}", hint=hint)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _safe_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", str(text)).strip("._") or "x"


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve()) and path.resolve() != root.resolve()
    except OSError:
        return False


def _remove_tree(path: Path) -> None:
    """Remove a directory (or file) completely; renamed aside first so it vanishes at once."""
    if not os.path.lexists(path):
        return
    if path.is_dir() and not path.is_symlink():
        aside = path.parent / f".rm-{path.name}-{secrets.token_hex(3)}"
        try:
            os.rename(path, aside)
        except OSError:
            aside = path
        shutil.rmtree(aside, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the action


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
