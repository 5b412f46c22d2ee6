"""Installing packages: fill a staging directory, move it into tools, record the env.

How an installation goes (``ckx.software.resolve.install`` runs the steps; this module does 2, 3, 5 and 6)
    1. The package is chosen from its tags (ckx.software.packages; a variation's tags count too); an ambiguous choice takes
       the default variation, or the package marked ``"default": true``, and says so; otherwise the
       user is asked on a terminal, and Ambiguous (exit 3) lists the candidates everywhere else.
    2. A per-package file lock in ``$CKX_HOME/locks`` serialises installations of one package, so two
       concurrent ``ckx install`` runs end with one env: the second finds the first's and stops there.
    3. Already installed (an env of this package with the same tags and version whose directory is
       still there): nothing to do, and that is said. A pip package whose module the target
       interpreter already imports (its soft entry detects it, at a version the requirement accepts;
       ckx.software.pip_install) is recorded as found rather than installed again. ``force`` installs anyway.
    4. The package's own deps are resolved (by ckx.software.resolve, before ``install_resolved``); the
       hook and pip run with their env vars.
    5. Everything is written into ``tools/.staging-<package uid>-<random>``: the verified download
       (never more than its meta's ``source.size`` bytes, nor than the ``download_max_bytes`` limit of
       settings.json; unpacked safely when asked, within the ``archive_*`` limits; ckx.software.fetch_install),
       or ``pip install --target`` (ckx.software.pip_install), or a CK package's clone or script
       (ckx.software.ckinstall), then the ``install.py`` hook.
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
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from ckx.store.context import Context
from ckx.store.entry import load_meta
from ckx.store.generic import resolve_base
from ckx.core.limits import Limits
from ckx.core.errors import CkxError, MetaError, NotFound, UsageError
from ckx.software.hooks import call_hook, load_hooks
from ckx.software.environment import env_text, merge_env, render_text
from ckx.store.index import EntryRecord
from ckx.software import ckinstall
from ckx.software.ckpackage import is_ck_package
from ckx.software.packages import Candidate, same_version
from ckx.software.envs import EnvRecord, ResolvedDep, delete_env, find_envs, record_env
from ckx.software import fetch_install, pip_install
from ckx.transfer.fetch import offline_from_env


log = logging.getLogger(__name__)

HOOK_FILE = "install.py"
HOOK_FUNCTION = "install"
# The arguments offered to the install hook; it declares the ones it uses.
HOOK_PARAMETERS: tuple[str, ...] = (
    "install_dir", "package_dir", "meta", "variation", "env", "python", "downloaded", "info",
)
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
            available = pip_install.already_available(self.ctx, self.candidate, self.source, python=python,
                                                      python_env=python_env, requested_version=self.requested_version)
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

    # -- sources (ckx.software.fetch_install and ckx.software.pip_install do the work) --------------------
    def _download(self) -> Path:
        """Fetch and place the download ``self.source`` describes; keep what the env record needs from it."""
        assert self.stage is not None
        done = fetch_install.download(self.ctx, self.candidate, self.source, stage=self.stage,
                                      local_path=self.local_path, offline=self.offline, limits=self.limits)
        if done.sha256 is not None:
            self.fetched_sha256 = done.sha256
        if done.main_file is not None:
            self.main_file = done.main_file
        return done.path

    def _pip(self, env: dict[str, str], python: str) -> str | None:
        """``pip install --target STAGE``; check the import; return the installed version."""
        assert self.stage is not None
        return pip_install.pip_install(self.ctx, self.candidate, self.source, stage=self.stage, env=env, python=python,
                                       local_path=self.local_path, offline=self.offline,
                                       requested_version=self.requested_version)

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


def dependency_environment(resolved: Sequence[ResolvedDep], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default os.environ) with each resolved dep's env vars applied in order (search paths prepended)."""
    return merge_env(os.environ if base is None else base, [dep.env or {} for dep in resolved])


def _python_of(resolved: Sequence[ResolvedDep]) -> tuple[str, str | None]:
    """The interpreter of the resolved compiler.python dep and its env uid; else the running one (no env)."""
    for dep in resolved:
        if dep.soft == "compiler.python" and dep.full_path:
            return str(dep.full_path), dep.env_uid
    return sys.executable, None


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
