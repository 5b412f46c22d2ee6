"""Installing CK-format packages: the plan for one package, git clones, CK scripts, and the env CK would record.

ckx.software.install drives the installation (lock, staging directory, move into place, env record) and
asks this module for the parts that are CK's:

* ``plan(ctx, candidate)`` classifies the package (ckx.software.ckpackage.install_tier) and refuses, with the
  reason, what ckx does not install; a CK-script package from a repo that did not come from the user's own
  pull or add is refused too (``ck_scripts_allowed``).
* Native packages become a ckx ``source`` (``download``: the URL, CK's checksum, unpacking; ``pip``: the
  requirement and ``PIP_INSTALL_OPTIONS``), so ckx's own fetch, checksum, unpack and pip do the work; a
  ``PACKAGE_GIT`` package is cloned by ``clone``. No shell script runs.
* CK-script packages run under ``run_script`` with CK's environment, in the staging directory, with a
  timeout; the output goes to a log under ``$CKX_HOME/logs`` that is kept (and copied into the install).
  ``INSTALL_DIR`` is the final path, a symlink to the staging directory until the move (the installer
  reserves it), so what the scripts write into their builds names the final path.
* ``ck_env`` is what the package's CK soft entry sets: ``<env_prefix>`` and its derived names.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ckx.core.errors import CkxError, DownloadError, MetaError, UsageError
from ckx.store.context import Context
from ckx.store.entry import load_meta
from ckx.store.repo import Repo
from ckx.software.envs import EnvRecord, record_env
from ckx.transfer.fetch import load_url_map, map_url
from ckx.software.ckpackage import (CK_SCRIPT, CK_TARGET_OS_ID, NATIVE, REFUSED, SHARED_INSTALL_SCRIPT, CkPackage,
                                    ck_entry_dir, ck_scripts_allowed, classify, is_ck_package, is_pip_script,
                                    own_scripts, script_text, yes)

SCRIPT_TIMEOUT_ENV = "CKX_CK_SCRIPT_TIMEOUT"
SCRIPT_TIMEOUT_S = 4 * 3600.0
GIT_TIMEOUT_S = 1800.0
LOG_NAME = "ck-install.log"
URL_SCHEMES = ("http://", "https://", "ftp://", "git://", "ssh://")
# pip options of CK's Python-package script that do not fit ``pip install --target`` (ckx's own layout).
PIP_OPTIONS_DROPPED = ("--user", "--prefix", "--root", "--target")


@dataclass
class CkPlan:
    """How one CK package installs: its tier and reason, the ckx source for the native tier, its soft."""

    package: CkPackage
    tier: str
    reason: str
    label: str
    source: dict = field(default_factory=dict)
    soft_alias: str | None = None
    env_prefix: str | None = None
    soft_customize_text: str = ""
    soft_file: str | None = None
    notes: list[str] = field(default_factory=list)
    # What ckx fetches before a CK script runs (the shared script's PACKAGE_WGET / PACKAGE_GIT step), or {}.
    prefetch: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The ckx source kind this plan maps to: download, pip, git or script."""
        return str(self.source.get("kind") or "script")


def plan(ctx: Context, candidate: Any) -> CkPlan:
    """The plan for a CK-format candidate; MetaError (refused, with the reason) or UsageError (scripts not allowed)."""
    record = candidate.record
    repo = ctx.registry.get(record.repo)
    meta = load_meta(record.meta_path)
    package = CkPackage.load(meta, record.path, repo, candidate.variation)
    tier, reason = classify(package)
    if tier == REFUSED:
        raise MetaError(f"{record.meta_path}: ckx does not install CK package {candidate.label}: {reason}",
                        hint="'ckx search package --installable' lists the CK packages ckx installs and how")
    result = CkPlan(package, tier, reason, candidate.label)
    _add_soft(ctx, result, meta, repo)
    if tier == CK_SCRIPT:
        allowed, why = ck_scripts_allowed(repo, meta)
        if not allowed:
            raise UsageError(f"{candidate.label} installs by running CK's scripts ({reason}); {why}",
                             hint="pull the repo with 'ckx pull repo --url=...' or add it with 'ckx add repo:NAME --path=DIR'")
        result.notes.append(f"running CK's scripts: {why}")
        result.source = {"kind": "script"}
        result.prefetch = _prefetch_source(package, result)
        return result
    result.source = _native_source(package, result)
    return result


def _add_soft(ctx: Context, result: CkPlan, meta: Mapping[str, Any], repo: Repo) -> None:
    soft_uoa = meta.get("soft_uoa")
    if not soft_uoa:
        return
    soft_dir = ck_entry_dir(repo.path, "soft", str(soft_uoa))
    if soft_dir is None:
        result.soft_alias = str(soft_uoa)
        return
    result.soft_alias = soft_dir.name
    try:
        soft_meta = load_meta(soft_dir / ".cm" / "meta.json")
    except CkxError:
        return
    customize = soft_meta.get("customize") or {}
    result.env_prefix = customize.get("env_prefix") or soft_meta.get("env_prefix")
    soft_file = customize.get("soft_file_universal") or customize.get("soft_file")
    if isinstance(soft_file, dict):
        soft_file = soft_file.get(CK_TARGET_OS_ID)
    if isinstance(soft_file, str) and soft_file:
        result.soft_file = soft_file.replace("$#sep#$", "/")
    try:
        result.soft_customize_text = (soft_dir / "customize.py").read_text(encoding="utf-8", errors="replace")
    except OSError:
        result.soft_customize_text = ""


def _native_source(package: CkPackage, result: CkPlan) -> dict:
    env = package.linux_env()
    script = package.script()
    if script is not None and is_pip_script(script.path) and env.get("PYTHON_PACKAGE_NAME"):
        name = env["PYTHON_PACKAGE_NAME"]
        version = env.get("PACKAGE_VERSION") or env.get("PYTHON_PACKAGE_VERSION")
        options = [o for o in shlex.split(env.get("PIP_INSTALL_OPTIONS", ""))
                   if not o.startswith(PIP_OPTIONS_DROPPED)]
        return {"kind": "pip", "requirements": [f"{name}=={version}" if version else name], "pip_args": options,
                "target_subdir": "build"}
    if env.get("DOWNLOAD_URL") and env.get("DOWNLOAD_FILE"):
        url = _join_url(env["DOWNLOAD_URL"], env["DOWNLOAD_FILE"])
        return _download_source(package, url, env["DOWNLOAD_FILE"], unpack=True, result=result)
    if yes(env.get("PACKAGE_GIT")):
        return {"kind": "git", "url": env["PACKAGE_URL"], "subdir": env.get("PACKAGE_SUB_DIR") or "",
                "checkout": env.get("PACKAGE_GIT_CHECKOUT") or "", "flags": env.get("PACKAGE_GIT_CLONE_FLAGS") or "",
                "submodules": yes(env.get("PACKAGE_GIT_SUBMODULES"))}
    name = env["PACKAGE_NAME"]
    output = package.wget_output()[0]
    unpack = any(yes(env.get(n)) for n in ("PACKAGE_UNGZIP", "PACKAGE_UNTAR", "PACKAGE_UNZIP", "PACKAGE_UNBZIP",
                                          "PACKAGE_UNXTAR"))
    return _download_source(package, _join_url(env["PACKAGE_URL"], name), output or name, unpack=unpack, result=result)


def _prefetch_source(package: CkPackage, result: CkPlan) -> dict:
    """The shared script's fetch step, which ckx does itself (its URL map, cache, checksum, offline rule)."""
    script = package.script()
    if script is None or script.entry_name not in SHARED_INSTALL_SCRIPT:
        return {}
    env = package.linux_env()
    if yes(env.get("PACKAGE_GIT")) and env.get("PACKAGE_URL"):
        return {"kind": "git", "url": env["PACKAGE_URL"], "subdir": env.get("PACKAGE_SUB_DIR") or "",
                "checkout": env.get("PACKAGE_GIT_CHECKOUT") or "", "flags": env.get("PACKAGE_GIT_CLONE_FLAGS") or "",
                "submodules": yes(env.get("PACKAGE_GIT_SUBMODULES")), "switch": "PACKAGE_GIT"}
    if yes(env.get("PACKAGE_WGET")) and env.get("PACKAGE_URL") and env.get("PACKAGE_NAME"):
        name = env["PACKAGE_NAME"]
        return dict(_download_source(package, _join_url(env["PACKAGE_URL"], name), name, unpack=False, result=result),
                    switch="PACKAGE_WGET", copy=True)
    return {}


def _download_source(package: CkPackage, url: str, filename: str, *, unpack: bool, result: CkPlan) -> dict:
    source: dict[str, Any] = {"kind": "download", "urls": [url], "filename": filename, "unpack": unpack}
    checksum = package.checksum()
    if checksum is not None:
        source[checksum[0]] = checksum[1]
    else:
        source["record_sha256"] = True
        result.notes.append(f"{result.label} declares no CK checksum (PACKAGE_MD5, DOWNLOAD_FILE_MD5, ...): "
                            "ckx records the sha256 of what it fetched")
    return source


def _join_url(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name.lstrip("/")


# --------------------------------------------------------------------------- git


def clone(ctx: Context, cplan: CkPlan, stage: Path, *, offline: bool, source: Mapping[str, Any] | None = None) -> dict[str, str]:
    """``git clone`` a PACKAGE_GIT package into ``stage/PACKAGE_SUB_DIR`` (URL map applied); the commit comes back.

    ``source`` is the git source (default: the plan's own, for the native tier; the prefetch for CK scripts).
    """
    source = cplan.source if source is None else source
    url = map_url(str(source["url"]), load_url_map(ctx.home))
    if offline and not url.startswith(("file://", "/")):
        raise DownloadError(f"{cplan.label}: offline, so not cloning {url}",
                            hint="map the URL to a local mirror (CKX_URL_MAP or settings.json url_map), or go online")
    target = stage / source["subdir"] if source.get("subdir") else stage / "src"
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    ctx.info(f"cloning {url}")
    _git(["clone", *shlex.split(source.get("flags") or ""), "--", url, str(target)], env=env, what=f"git clone {url}")
    if source.get("checkout"):
        _git(["-C", str(target), "checkout", source["checkout"]], env=env, what=f"git checkout {source['checkout']}")
    if source.get("submodules"):
        _git(["-C", str(target), "submodule", "update", "--init"], env=env, what="git submodule update")
    commit = _git(["-C", str(target), "rev-parse", "HEAD"], env=env, what="git rev-parse").strip()
    cplan.notes.append(f"cloned {url} at commit {commit}")
    return {"url": url, "commit": commit}


def _git(args: list[str], *, env: Mapping[str, str], what: str) -> str:
    try:
        proc = subprocess.run(["git", *args], env=dict(env), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise CkxError("git is not installed (or not on PATH)", hint="install git to install PACKAGE_GIT packages") from None
    except subprocess.TimeoutExpired as exc:
        raise DownloadError(f"{what} did not finish within {GIT_TIMEOUT_S:.0f} s") from exc
    if proc.returncode != 0:
        raise DownloadError(f"{what} failed: {proc.stderr.strip()[-500:]}", hint="check the URL and the network")
    return proc.stdout


# --------------------------------------------------------------------------- CK scripts

_NETWORK_RE = re.compile(r"(^|[\s;&|(`])(wget|curl|git\s+clone|pip\d?\s+install|-m\s+pip\s+install)\b", re.M)


def check_offline(cplan: CkPlan) -> None:
    """Offline, refuse a CK script that fetches by itself (wget, curl, git clone, pip install).

    The shared script's own fetch step does not count: ckx does it (``CkPlan.prefetch``) under its offline rule.
    """
    package = cplan.package
    script = package.script()
    paths = [p for p in own_scripts(package.entry_dir)]
    if script is not None and script.entry_name not in SHARED_INSTALL_SCRIPT:
        paths.insert(0, script.path)
    for path in paths:
        found = _NETWORK_RE.search(script_text(path))
        if found:
            raise DownloadError(f"{cplan.label}: offline, so not running {path}, which fetches by itself "
                                f"({found.group(2).split()[0]})",
                                hint="install it once online, or map its URLs to local mirrors and go online")


def script_environment(cplan: CkPlan, install_dir: Path, base: Mapping[str, str], *, python: str,
                       home: Any = None) -> dict[str, str]:
    """CK's environment for a package script: the deps' vars (``base``), install_env, CK's own names.

    URL values of install_env go through the URL map of ``home`` (CKX_URL_MAP, settings.json url_map), so
    the scripts' own downloads and clones reach the same mirrors as ckx's.
    """
    package = cplan.package
    script = package.script()
    assert script is not None
    env = dict(base)
    url_map = load_url_map(home) if home is not None else {}
    env.update({k: map_url(v, url_map) if v.startswith(URL_SCHEMES) else v for k, v in package.env.items()})
    if cplan.prefetch.get("switch"):
        env[cplan.prefetch["switch"]] = "NO"  # ckx fetched it already (see CkPlan.prefetch)
    env.update({
        "INSTALL_DIR": str(install_dir),
        "PACKAGE_DIR": str(script.entry_dir),
        "ORIGINAL_PACKAGE_DIR": str(package.entry_dir),
        "CK_TARGET_OS_ID": CK_TARGET_OS_ID,
        "CK_HOST_OS_ID": CK_TARGET_OS_ID,
        "CK_HOST_CPU_NUMBER_OF_PROCESSORS": str(os.cpu_count() or 1),
        "CK_MD5SUM_CMD": "md5sum",
        "CK_ENV_COMPILER_PYTHON_FILE": env.get("CK_ENV_COMPILER_PYTHON_FILE") or python,
    })
    if package.version:
        env.setdefault("PACKAGE_VERSION", package.version)
    return {k: v for k, v in env.items() if v is not None}


def run_script(ctx: Context, cplan: CkPlan, stage: Path, env: Mapping[str, str], *, timeout: float | None = None) -> Path:
    """Run the package's CK script in ``stage`` (sourced, as CK does); the log's path comes back.

    The log is ``$CKX_HOME/logs/ck-<package>-<time>.log`` and stays after a failure; on success a copy goes
    into the installation. Raises CkxError with the log's last lines on failure or after the timeout
    (``CKX_CK_SCRIPT_TIMEOUT`` seconds, default 4 h; the whole process group is stopped).
    """
    script = cplan.package.script()
    assert script is not None
    limit = timeout or float(os.environ.get(SCRIPT_TIMEOUT_ENV) or SCRIPT_TIMEOUT_S)
    logs = ctx.home.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"ck-{cplan.package.entry_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    ctx.info(f"running CK script {script.path} in {stage} (log {log_path})")
    command = 'cd "$INSTALL_DIR" && . "$CKX_CK_SCRIPT"'
    run_env = dict(env, CKX_CK_SCRIPT=str(script.path))
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"# {cplan.label}: {script.path}\n# INSTALL_DIR={env.get('INSTALL_DIR')} (staged in {stage})\n")
        log.flush()
        proc = subprocess.Popen(["bash", "-c", command], cwd=stage, env=run_env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            status = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            raise CkxError(f"the CK script of {cplan.label} did not finish within {limit:.0f} s; log: {log_path}",
                           hint=f"raise the limit with {SCRIPT_TIMEOUT_ENV}=SECONDS; nothing was installed") from None
        except BaseException:
            _stop_group(proc)
            raise
    check = str(cplan.package.meta.get("check_exit_status", "yes")).lower() != "no"
    if status != 0 and check:
        tail = "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
        raise CkxError(f"the CK script of {cplan.label} failed (exit status {status}); log: {log_path}\n{tail}",
                       hint="nothing was installed; the log above is kept")
    relink_into(stage)
    (stage / LOG_NAME).write_bytes(log_path.read_bytes())
    return log_path


def _stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def relink_into(stage: Path) -> int:
    """Absolute symlinks under ``stage`` that point into it become relative, so they survive the move into place."""
    root = stage.resolve()
    changed = 0
    for folder, dirs, files in os.walk(stage):
        for name in dirs + files:
            path = Path(folder) / name
            if not path.is_symlink():
                continue
            target = os.readlink(path)
            if not os.path.isabs(target):
                continue
            resolved = Path(os.path.normpath(target))
            try:
                inside = resolved.is_relative_to(root) or resolved.is_relative_to(stage)
            except ValueError:
                inside = False
            if not inside:
                continue
            base = root if resolved.is_relative_to(root) else stage
            relative = os.path.relpath(base / resolved.relative_to(base), (root / Path(folder).relative_to(stage)))
            path.unlink()
            os.symlink(relative, path)
            changed += 1
    return changed


# --------------------------------------------------------------------------- the env record


def full_path_of(cplan: CkPlan, install_dir: Path) -> Path:
    """The file CK records for the installation (the first ``end_full_path`` present), else the install directory."""
    paths = cplan.package.end_full_paths
    for relative in paths:
        if os.path.lexists(install_dir / relative):
            return install_dir / relative
    return install_dir / paths[0] if paths else install_dir


def check_full_path(cplan: CkPlan, stage: Path) -> None:
    """CK's check that the installation made its ``end_full_path`` (skipped with ``skip_file_check``)."""
    paths = cplan.package.end_full_paths
    relative = " or ".join(paths)
    if not paths or yes(cplan.package.customize.get("skip_file_check")):
        return
    if not any(os.path.lexists(stage / p) for p in paths):
        raise CkxError(f"{cplan.label} installed, but its end_full_path {relative} is not in the installation",
                       hint="the package's archive or script did not produce the file its meta names; nothing was installed")


def ck_env(cplan: CkPlan, install_dir: Path) -> dict[str, str]:
    """The variables CK's soft entry sets for this installation (``{install_dir}`` already filled in).

    ``<env_prefix>`` is the installation's root (the directory holding the recorded file, above a ``bin``);
    ``_BIN``/``_LIB``/``_INCLUDE`` where those directories exist; ``_FILE`` for a recorded file; Python
    packages add their ``build`` directory to PYTHONPATH; model softs get ``script:process-model``'s names
    (``ML_MODEL_*``, ``<prefix>_ROOT``, ``MODEL_*`` and ``*_FILE`` from install_env).
    """
    package = cplan.package
    full = full_path_of(cplan, install_dir)
    env: dict[str, str] = {}
    ep = cplan.env_prefix
    root = _install_root(cplan, install_dir, full)
    if ep:
        env[ep] = str(root)
        for suffix, names in (("_BIN", ("bin", "install/bin")), ("_LIB", ("lib", "install/lib", "lib64")),
                              ("_INCLUDE", ("include", "install/include"))):
            for name in names:
                if (root / name).is_dir():
                    env[ep + suffix] = str(root / name)
                    break
        if full != install_dir and not full.is_dir():
            env[ep + "_FILE"] = str(full)
    if cplan.kind == "pip":
        env["PYTHONPATH"] = str(install_dir / "build")
        bin_dir = install_dir / "build" / "bin"
        if bin_dir.is_dir():
            env["PATH"] = str(bin_dir)
    text = cplan.soft_customize_text
    if ep and "process-model" in text:
        env.update(_model_vars(package, ep, full))
    if ep:
        for ext in ("ONNX", "PB", "TFLITE", "PT", "PLAN"):
            if f"'_{ext}_FILENAME'" in text or f'"_{ext}_FILENAME"' in text:
                env[f"{ep}_{ext}_FILENAME"] = full.name
                env[f"{ep}_{ext}_FILEPATH"] = str(full)
    return env


def record(ctx: Context, cplan: CkPlan, candidate: Any, final: Path, *, version: str | None, resolved: Any,
           source: Mapping[str, Any], fetched_sha256: str | None, python: str | None) -> EnvRecord:
    """Record the env of an installed CK package: ``ck_env``'s names, its tier, checksums and notes."""
    extra_meta: dict[str, Any] = {"variation": candidate.variation, "package_uid": candidate.record.uid,
                                  "ck_tier": cplan.tier, "ck_reason": cplan.reason}
    if fetched_sha256:
        extra_meta["sha256"] = fetched_sha256
    for algorithm in ("sha256", "md5"):
        if source.get(algorithm):
            extra_meta[f"verified_{algorithm}"] = source[algorithm]
    if cplan.notes:
        extra_meta["notes"] = list(cplan.notes)
    if source.get("kind") == "pip":
        extra_meta["python"] = python  # the interpreter its modules were installed for
    return record_env(
        ctx, soft=cplan.soft_alias, version=version, full_path=str(full_path_of(cplan, final)), env=ck_env(cplan, final),
        tags=list(candidate.tags), package=candidate.name, install_dir=str(final), env_prefix=cplan.env_prefix,
        deps={d.name: d.env_uid for d in resolved if d.env_uid},
        name=cplan.package.meta.get("package_extra_name") or candidate.name, detected_by="package",
        extra_meta=extra_meta,
    )


def _install_root(cplan: CkPlan, install_dir: Path, full: Path) -> Path:
    """CK's install path of a soft: the recorded file less the soft's own ``soft_file`` part (``bin/cmake``)."""
    if full == install_dir:
        return install_dir
    depth = len([p for p in (cplan.soft_file or "").split("/") if p]) or 1
    root = full
    for _ in range(depth):
        root = root.parent
    if not root.is_relative_to(install_dir):
        root = install_dir
    if root.name == "bin" and root != install_dir:
        root = root.parent
    return root


def _model_vars(package: CkPackage, ep: str, full: Path) -> dict[str, str]:
    install_env = package.env
    root = full.parent
    env = {f"{ep}_ROOT": str(root), "ML_MODEL_ROOT": str(root)}
    model_file, model_path = full.name, full
    if model_file == "dummy" or not full.is_file():
        model_file = install_env.get("PACKAGE_NAME") or model_file
        model_path = root / model_file
    env["ML_MODEL_FILENAME"] = model_file
    env["ML_MODEL_FILEPATH"] = str(model_path)
    for name, value in install_env.items():
        if name.endswith("_FILE"):
            env[f"{ep}_{name[:-len('_FILE')]}"] = str(root / value)
    for name, value in install_env.items():
        if name.startswith("MODEL_"):
            env[ep + name[len("MODEL"):]] = value
    for name, value in install_env.items():
        if name.startswith("ML"):
            env[name] = value
    return env


__all__ = ["CkPlan", "NATIVE", "CK_SCRIPT", "REFUSED", "check_full_path", "ck_env", "clone", "full_path_of",
           "check_offline", "is_ck_package", "plan", "record", "relink_into", "run_script", "script_environment"]
