"""Installing packages: fill a staging directory, move it into tools, record the env.

How an installation goes (``ckx.software.resolve.install`` runs the steps; this module does 2, 3, 5 and 6)
    1. The package is chosen from its tags (ckx.software.packages; a variation's tags count too); an ambiguous choice takes
       the default variation, or the package marked ``"default": true``, and says so; otherwise the
       user is asked on a terminal, and Ambiguous (exit 3) lists the candidates everywhere else.
    2. A per-package file lock in ``$CKX_HOME/locks`` serialises installations of one package, so two
       concurrent ``ckx install`` runs end with one env: the second finds the first's and stops there.
    3. Already installed (an env of this package with the same tags and version whose directory is
       still there): nothing to do, and that is said. A pip package whose module the target
       interpreter already imports (its soft entry detects it, at a version the requirement accepts)
       is recorded as found rather than installed again. ``force`` installs anyway.
    4. The package's own deps are resolved (by ckx.software.resolve, before ``install_resolved``); the
       hook and pip run with their env vars.
    5. Everything is written into ``tools/.staging-<package uid>-<random>``: the verified download
       (never more than its meta's ``source.size`` bytes, nor than the ``download_max_bytes`` limit of
       settings.json; unpacked safely when asked, within the ``archive_*`` limits), or ``pip install --target``, then the ``install.py`` hook.
    6. The staging directory is renamed (``os.replace``) to
       ``tools/<alias>-<variation>-<version>-<short uid>`` and the env is recorded with the package's
       env vars, ``{install_dir}`` substituted. A failure at any step removes the staging or final
       directory, so no env and no half-installed directory remain; only a download's ``.part`` file
       stays in the cache, for a network failure that a later run can resume.

Install hooks (``install.py`` in the package entry) are loaded and checked before anything runs:
exactly one public name, ``install``, whose keyword-only parameters are those of ``HOOK_PARAMETERS``
it wants (the hook contract of ckx.software.hooks); helpers and imports must be private.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from ckx.store.context import Context
from ckx.store.entry import load_meta
from ckx.store.generic import resolve_base
from ckx.core.limits import Limits
from ckx.core.errors import ChecksumMismatch, CkxError, DownloadError, IntegrityError, MetaError, NotFound, UsageError
from ckx.software.hooks import call_hook, load_hooks
from ckx.software.environment import env_text, merge_env, render_text
from ckx.store.index import EntryRecord, Query
from ckx.software import ckinstall
from ckx.software.ckpackage import is_ck_package
from ckx.software.packages import Candidate, same_version
from ckx.software.detect import detect_soft
from ckx.software.envs import EnvRecord, ResolvedDep, delete_env, find_envs, record_env
from ckx.transfer.checksum import Checker, file_digest
from ckx.transfer.fetch import (OFFLINE_ENV, cached_download_path, download_hint, fetch, filename_from_url, load_url_map,
                                local_copy, offline_from_env, url_key)
from ckx.transfer.unpack import unpack


log = logging.getLogger(__name__)

HOOK_FILE = "install.py"
HOOK_FUNCTION = "install"
# The arguments offered to the install hook; it declares the ones it uses.
HOOK_PARAMETERS: tuple[str, ...] = (
    "install_dir", "package_dir", "meta", "variation", "env", "python", "downloaded", "info",
)
PIP_ARGS_ENV = "CKX_PIP_ARGS"
PIP_TIMEOUT_S = 3600.0
IMPORT_CHECK_TIMEOUT_S = 300.0
LOCK_TIMEOUT_S = 6 * 3600.0
STAGING_PREFIX = ".staging-"



# --------------------------------------------------------------------------- install hooks


def hook_file(ctx: Context, record: EntryRecord) -> Path | None:
    """The ``install.py`` of a package entry, else that of its nearest base entry that has one.

    Packages that differ only in their meta (the derived int8 and TensorFlow models) share one hook this
    way; the hook still receives the package's own directory as ``package_dir``.
    """
    seen: set[str] = set()
    while True:
        path = record.path / HOOK_FILE
        if path.is_file():
            return path
        base = load_meta(record.meta_path).get("base")
        if not base or record.cid in seen:
            return None
        seen.add(record.cid)
        record = resolve_base(ctx, record, str(base))


def load_hook(path: Path) -> Callable[..., Any]:
    """Load an ``install.py`` and return its ``install`` function, checked against the hook contract.

    Raises MetaError naming the file when it cannot be imported, when it defines any other public
    name, when ``install`` is missing, or when ``install`` takes a parameter that is not keyword-only or
    not one of ``HOOK_PARAMETERS`` (it declares those it wants; see ckx.software.hooks).
    """
    path = Path(path)
    found = load_hooks(path, {HOOK_FUNCTION: HOOK_PARAMETERS}, file_label="an install.py", private_names=True)
    if HOOK_FUNCTION not in found:
        raise MetaError(f"{path}: no function '{HOOK_FUNCTION}' (the hook's one public name)")
    return found[HOOK_FUNCTION]


def run_hook(
    function: Callable[..., Any], path: Path, *, install_dir: Path, package_dir: Path, meta: dict,
    variation: str | None, env: dict[str, str], python: str, downloaded: Path | None, info: Callable[[str], None],
) -> dict[str, str]:
    """Call a loaded hook; its extra env vars (values as strings) come back.

    A CkxError raised by the hook passes through; any other exception becomes a CkxError naming
    the hook (the traceback goes to the debug log). A return value that is not a mapping of
    variable names to strings, numbers or booleans is a MetaError.
    """
    offered = {"install_dir": install_dir, "package_dir": package_dir, "meta": meta, "variation": variation,
               "env": env, "python": python, "downloaded": downloaded, "info": info}
    try:
        result = call_hook(function, offered)
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
        extra[key] = str(env_text(value))
    return extra


# --------------------------------------------------------------------------- the installation


@dataclass(frozen=True)
class InstallResult:
    """What ``install`` did: ``status`` is "installed", "already-installed" or "already-available"."""

    env: EnvRecord
    status: str
    candidate: Candidate


def previous_installations(ctx: Context, candidate: Candidate, *, version: str | None = None) -> list[EnvRecord]:
    """The envs of this package (and version) already installed, newest index state first.

    Called with the package lock held: another process may have recorded one while we waited.
    """
    ctx.index.refresh(["env"], force=True)
    return installed_envs(ctx, candidate, version=version)


def already_installed(ctx: Context, candidate: Candidate, env: EnvRecord) -> InstallResult:
    """The result for a package found installed (said with ctx.info)."""
    ctx.info(f"{candidate.label} {env.version or ''} is already installed in {env.install_dir} "
             f"(env {env.uid}); nothing to do (--force installs it again)".replace("  ", " "))
    return InstallResult(env, "already-installed", candidate)


def install_resolved(
    ctx: Context,
    candidate: Candidate,
    *,
    resolved: Sequence[ResolvedDep],
    previous: Sequence[EnvRecord] = (),
    version: str | None = None,
    local_path: str | os.PathLike[str] | None = None,
    offline: bool = False,
    force: bool = False,
) -> InstallResult:
    """Install ``candidate`` whose deps are already ``resolved`` and record its env (steps 3 to 6 above).

    ``previous`` installations are replaced after a forced reinstall. ``local_path`` is a file already
    on disk used instead of downloading (its checksum is still verified); for pip packages a wheel or
    sdist file, or a directory of them (``--no-index --find-links DIR``). ``offline`` never touches the
    network for downloads. Call it with ``package_lock`` held.

    Raises ChecksumMismatch / UnsafeArchive (5), DownloadError (1, with the ways forward in its hint),
    MetaError for a broken package, CkxError for a failed pip or hook.
    """
    return _Installation(ctx, candidate, version=version, local_path=local_path, offline=offline,
                         force=force).run(list(resolved), list(previous))


@contextlib.contextmanager
def package_lock(ctx: Context, candidate: Candidate) -> Iterator[None]:
    """Hold ``$CKX_HOME/locks/package-<uid>.lock``; say so when another installation holds it."""
    # reason: filelock loads only when a package is installed (light start-up)
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
        # A CK-format package: its plan (tier, and the ckx source its native tier maps to); refused ones raise here.
        self.ck = ckinstall.plan(ctx, candidate) if is_ck_package(candidate.meta) else None
        self.source: dict = dict(self.ck.source if self.ck else candidate.meta["source"])
        self.fetched_sha256: str | None = None
        self.reserved: Path | None = None  # a CK script's final path, a symlink to the staging directory meanwhile
        self.requested_version = version
        self.local_path = Path(local_path).expanduser() if local_path else None
        self.offline = offline or offline_from_env()
        self.force = force
        self.stage: Path | None = None
        self.final: Path | None = None
        self.python: str | None = None
        self.main_file: str | None = None  # a download kept as one file: the env's full_path
        self.limits = Limits.from_settings(ctx.home.settings_path)  # bounds on downloads and archives

    # -- the steps ------------------------------------------------------------------------------
    def run(self, resolved: list[ResolvedDep], previous: list[EnvRecord]) -> InstallResult:
        python, python_env = _python_of(resolved)
        if self.source["kind"] == "pip" and not self.force and self.local_path is None and self.ck is None:
            available = self._already_available(python, python_env)
            if available is not None:
                return InstallResult(available, "already-available", self.candidate)
        self.python = python
        env = self._install(resolved, python)
        if previous:
            self._replace(previous)
        return InstallResult(env, "installed", self.candidate)

    def _install(self, resolved: list[ResolvedDep], python: str) -> EnvRecord:
        ctx, candidate = self.ctx, self.candidate
        tools = ctx.home.tools
        tools.mkdir(parents=True, exist_ok=True)
        self._remove_abandoned_stages(tools)
        self.stage = tools / f"{STAGING_PREFIX}{candidate.record.uid or candidate.name}-{secrets.token_hex(4)}"
        self.stage.mkdir()
        try:
            env = dependency_environment(resolved)
            ctx.info(f"installing {candidate.label} into {tools}")
            if self.ck is not None:
                ctx.info(f"CK package, {self.ck.tier} tier: {self.ck.reason}")
                for note in self.ck.notes:
                    ctx.info(note)
            downloaded, version, extra = self._obtain(env, python)
            hook_path = hook_file(ctx, candidate.record) if self.ck is None else None
            if self.ck is not None:
                ckinstall.check_full_path(self.ck, self.stage)
            elif hook_path is not None:
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
        if self.ck is not None:
            return self._obtain_ck(env, python)
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

    def _obtain_ck(self, env: dict[str, str], python: str) -> tuple[Path | None, str | None, dict[str, str]]:
        """A CK package: ckx's download or pip (native), a git clone (native), or CK's script (ck-script)."""
        assert self.ck is not None and self.stage is not None
        version = self.ck.package.version
        kind = self.source["kind"]
        if kind == "download":
            return self._download(), version, {}
        if kind == "pip":
            return None, self._pip(env, python) or version, {}
        if self.local_path is not None:
            raise UsageError(f"{self.candidate.label} is a CK {kind} package: --local_path does not apply")
        if kind == "git":
            ckinstall.clone(self.ctx, self.ck, self.stage, offline=self.offline)
            return None, version, {}
        if self.offline or offline_from_env():
            ckinstall.check_offline(self.ck)
        prefetch = self.ck.prefetch
        if prefetch.get("kind") == "git":
            ckinstall.clone(self.ctx, self.ck, self.stage, offline=self.offline, source=prefetch)
        elif prefetch.get("kind") == "download":
            self.source = dict(prefetch)
            try:
                self._download()
            finally:
                self.source = {"kind": "script"}
        # The script sees the final path (a symlink to the staging directory until the move), so the paths it
        # writes into what it builds (prefixes, symlinks, shebangs) stay right once the directory moves into place.
        install_dir = self._reserve_final(version)
        script_env = ckinstall.script_environment(self.ck, install_dir, env, python=python, home=self.ctx.home)
        ckinstall.run_script(self.ctx, self.ck, self.stage, script_env)
        return None, version, {}

    # -- download sources -----------------------------------------------------------------------
    def _download(self) -> Path:
        ctx, source, label = self.ctx, self.source, self.candidate.label
        urls = [str(u) for u in source.get("urls") or []]
        if not urls and self.local_path is None:
            raise MetaError(f"{self.candidate.record.meta_path}: field 'source.urls': package {label} has no URL")
        checker = Checker.from_meta(source)
        if checker is None and not source.get("record_sha256"):
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
                      url_map=load_url_map(ctx.home), extra_hint=ways, max_bytes=self.limits.download_max_bytes,
                      expected_size=self._declared_size())
            except ChecksumMismatch as exc:
                exc.hint = "; ".join(filter(None, [exc.hint, download_hint(ways)]))
                raise
            except DownloadError as exc:
                # Callers (ckx run) name the package and variation in their own ways forward.
                exc.package = self.candidate.record.alias
                exc.variation = self.candidate.variation
                raise
        assert self.stage is not None
        if checker is None and source.get("record_sha256"):
            self.fetched_sha256 = file_digest(dest)
            ctx.info(f"recorded the sha256 of {filename}: {self.fetched_sha256} (the package declares no checksum)")
        if source.get("unpack"):
            ctx.info(f"unpacking {filename}")
            try:
                unpack(dest, self.stage, strip_components=int(source.get("strip_components") or 0),
                       limits=self.limits)
            except IntegrityError:
                dest.unlink(missing_ok=True)  # unsafe or corrupt: never offer it from the cache again
                raise
        elif source.get("copy"):  # a CK script works on it in place: never a hard link into the cache
            shutil.copy2(dest, self.stage / filename)
        else:
            _link_or_copy(dest, self.stage / filename)
            self.main_file = filename
        return dest

    def _declared_size(self) -> int | None:
        """The download's size in bytes as ``source.size`` states it (None when it does not)."""
        size = self.source.get("size")
        if size is None:
            return None
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise MetaError(f"{self.candidate.record.meta_path}: field 'source.size': "
                            f"must be a positive number of bytes, not {size!r}")
        return size

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
            # reason: packaging loads only where versions are compared (light start-up)
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
        elif self.offline and "--no-index" not in args:
            raise DownloadError(
                f"offline mode (--offline or {OFFLINE_ENV}=1): not running pip install {' '.join(targets)} "
                f"for {self.candidate.label}, which would reach the package index",
                hint="pass a wheel or a directory of wheels with --local_path=PATH, or point pip at a local "
                     f"directory with {PIP_ARGS_ENV}='--no-index --find-links DIR'")
        target = self.stage / str(self.source.get("target_subdir") or "")
        argv = [python, "-m", "pip", "install", "--target", str(target), *args, *targets]
        timeout = float(self.source.get("timeout_s") or PIP_TIMEOUT_S)
        self.ctx.info("running pip install " + " ".join(targets))
        pip_env = dict(env)
        pip_env.pop("PYTHONPATH", None)  # pip itself must run from the interpreter's own site-packages
        _run_checked(argv, env=pip_env, timeout=timeout, what=f"pip install for {self.candidate.label}",
                     hint="check the requirement and pip's registry settings; for a machine without a registry, "
                          "pass a wheel or a directory of wheels with --local_path=PATH")
        version = _installed_version(target, requirements[0])
        import_name = self.source.get("import_name")
        if import_name:
            check_env = dict(env)
            check_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
            _run_checked([python, "-c", f"import {import_name}"], env=check_env, timeout=IMPORT_CHECK_TIMEOUT_S,
                         what=f"import {import_name} after installing {self.candidate.label}", cwd=self.stage)
        return version

    def _local_pip_targets(self, requirements: list[str], args: list[str]) -> list[str]:
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

    def _already_available(self, python: str, python_env: str | None) -> EnvRecord | None:
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
    def _final_base(self, version: str | None) -> str:
        parts = [self.candidate.name, self.candidate.variation, version]
        return "-".join(_safe_part(p) for p in parts if p)

    def _reserve_final(self, version: str | None) -> Path:
        """Take a free final name now, as a symlink to the staging directory (``_move_into_place`` uses it)."""
        assert self.stage is not None
        base = self._final_base(version)
        for _ in range(10):
            final = self.stage.parent / f"{base}-{secrets.token_hex(4)}"
            try:
                os.symlink(self.stage, final, target_is_directory=True)
            except FileExistsError:
                continue
            self.reserved = final
            return final
        raise CkxError(f"cannot find a free directory name for {base} in {self.stage.parent}")  # pragma: no cover

    def _move_into_place(self, tools: Path, version: str | None) -> Path:
        assert self.stage is not None
        if self.reserved is not None:
            final, self.reserved = self.reserved, None
            final.unlink()
            os.rename(self.stage, final)
            self.stage = None
            return final
        base = self._final_base(version)
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

    def _record(self, resolved: list[ResolvedDep], version: str | None, extra: dict[str, str]) -> EnvRecord:
        assert self.final is not None
        if self.ck is not None:
            return ckinstall.record(self.ctx, self.ck, self.candidate, self.final, version=version, resolved=resolved,
                                    source=self.source, fetched_sha256=self.fetched_sha256, python=self.python)
        install_dir = str(self.final)
        env = self._render_env({"install_dir": install_dir})
        hook = hook_file(self.ctx, self.candidate.record) or self.candidate.record.path / HOOK_FILE
        env.update({key: render_text(value, {"install_dir": install_dir}, where=f"{hook}: {HOOK_FUNCTION}() value {key}")
                    for key, value in extra.items()})
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

    def _render_env(self, values: Mapping[str, str]) -> dict[str, str]:
        """The package's ``env`` templates rendered with ``values``; None values leave the variable out."""
        env: dict[str, str] = {}
        for key, template in (self.meta.get("env") or {}).items():
            text = env_text(template)
            if text is not None:
                env[key] = render_text(text, values, where=f"{self.candidate.record.meta_path}: field 'env.{key}'")
        return env

    def _replace(self, previous: list[EnvRecord]) -> None:
        """After a forced reinstall, drop the envs and directories of the installation it replaces."""
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
        for path in (self.reserved, self.stage, self.final):
            if path is not None:
                _remove_tree(path)
        self.stage = self.final = self.reserved = None

    def _remove_abandoned_stages(self, tools: Path) -> None:
        """Staging directories of this package left by a killed process (we hold the package lock)."""
        prefix = f"{STAGING_PREFIX}{self.candidate.record.uid or self.candidate.name}-"
        for path in tools.glob(prefix + "*"):
            log.info("removing abandoned staging directory %s", path)
            _remove_tree(path)
        for path in tools.iterdir():  # final names a killed CK-script installation reserved
            if path.is_symlink() and os.readlink(path).startswith(str(tools / prefix)):
                path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- helpers


def installed_envs(ctx: Context, candidate: Candidate, *, version: str | None = None) -> list[EnvRecord]:
    """Envs recorded for this package (with this variation's tags) whose directory is still there."""
    found = []
    for env in find_envs(ctx, tags=",".join(candidate.tags)):
        if env.package not in (candidate.name, candidate.record.uid):
            continue
        if version is not None and (env.version is None or not same_version(env.version, version)):
            continue
        if env.install_dir and not Path(env.install_dir).is_dir():
            ctx.warn(f"env {env.uid} of {candidate.label} points to {env.install_dir}, which is gone; ignoring it")
            continue
        found.append(env)
    return found


def detect_available(ctx: Context, soft: str, *, python: str, python_env: str | None = None) -> EnvRecord | None:
    """Run the soft entry ``soft`` in ``python`` (or the compiler.python env ``python_env``).

    Returns the recorded env when the soft finds the thing, None when it does not (or cannot look).
    """
    try:
        envs = detect_soft(ctx, soft, python=None if python_env else python,
                           deps={"python": python_env} if python_env else None)
    except NotFound:
        return None
    except CkxError as exc:
        ctx.warn(f"could not check whether {soft} is already available: {exc}")
        return None
    return envs[0] if envs else None


def dependency_environment(resolved: Sequence[ResolvedDep], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default os.environ) with each resolved dep's env vars applied in order (search paths prepended)."""
    return merge_env(os.environ if base is None else base, [dep.env or {} for dep in resolved])


def _python_of(resolved: Sequence[ResolvedDep]) -> tuple[str, str | None]:
    """The interpreter of the resolved compiler.python dep and its env uid; else the running one (no env)."""
    for dep in resolved:
        if dep.soft == "compiler.python" and dep.full_path:
            return str(dep.full_path), dep.env_uid
    return sys.executable, None


def _version_satisfies(version: str | None, requirement: str) -> bool:
    # reason: packaging loads only where versions are compared (light start-up)
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
    # reason: importlib.metadata loads only after a pip installation (light start-up)
    import importlib.metadata

    # reason: packaging loads only where versions are compared (light start-up)
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
