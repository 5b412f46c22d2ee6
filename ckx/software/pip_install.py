"""Installing a pip-source package: ``pip install --target`` into the staging directory, and the check before.

ckx.software.install drives the installation (lock, staging directory, move into place, env record); for a
package whose ``source.kind`` is ``pip`` it asks this module two things:

- whether the target interpreter already imports the package (its soft entry detects it, at a version the
  first requirement accepts), so the env found is recorded rather than installed again
  (:func:`already_available`);
- to run pip itself (:func:`pip_install`): the requirements (the first one pinned to a requested version),
  ``source.no_deps`` and ``source.pip_args``, ``CKX_PIP_ARGS``, a local wheel, sdist or directory of them
  (``--local_path``; a file's checksum is verified), offline refusal, then ``import source.import_name``
  in the staged directory, and the installed version read from its dist-info.
"""
from __future__ import annotations

import logging
import os
import shlex
import subprocess
from pathlib import Path
from typing import Mapping

from ckx.store.context import Context
from ckx.core.errors import ChecksumMismatch, CkxError, DownloadError, MetaError, NotFound
from ckx.software.packages import Candidate
from ckx.software.detect import detect_soft
from ckx.software.envs import EnvRecord
from ckx.transfer.checksum import Checker
from ckx.transfer.fetch import OFFLINE_ENV


log = logging.getLogger(__name__)

PIP_ARGS_ENV = "CKX_PIP_ARGS"
PIP_TIMEOUT_S = 3600.0
IMPORT_CHECK_TIMEOUT_S = 300.0


def pip_requirements(candidate: Candidate, source: Mapping, *, requested_version: str | None) -> list[str]:
    """The package's ``source.requirements``; the first pinned to ``requested_version`` when the package has none.

    MetaError naming the meta field when there is no requirement, or the first one cannot be parsed for pinning.
    """
    requirements = [str(r) for r in source.get("requirements") or []]
    if not requirements:
        raise MetaError(f"{candidate.record.meta_path}: field 'source.requirements': "
                        f"pip package {candidate.label} names no requirement")
    if requested_version and candidate.version is None:
        # reason: packaging loads only where versions are compared (light start-up)
        from packaging.requirements import InvalidRequirement, Requirement

        try:
            first = Requirement(requirements[0])
        except InvalidRequirement as exc:
            raise MetaError(f"{candidate.record.meta_path}: field 'source.requirements': "
                            f"invalid requirement {requirements[0]!r}: {exc}") from exc
        extras = f"[{','.join(sorted(first.extras))}]" if first.extras else ""
        requirements[0] = f"{first.name}{extras}=={requested_version}"
    return requirements


def pip_install(
    ctx: Context, candidate: Candidate, source: Mapping, *, stage: Path, env: Mapping[str, str], python: str,
    local_path: Path | None, offline: bool, requested_version: str | None,
) -> str | None:
    """``pip install --target STAGE`` with ``python``; check the import; return the installed version.

    ``env`` is the dependencies' environment (pip itself runs without its PYTHONPATH). DownloadError when
    ``offline`` would need the package index; CkxError with pip's last lines when pip or the import fails.
    """
    requirements = pip_requirements(candidate, source, requested_version=requested_version)
    args = ["--no-input", "--disable-pip-version-check"]
    if source.get("no_deps"):
        args.append("--no-deps")
    args += [str(a) for a in source.get("pip_args") or []]
    args += shlex.split(os.environ.get(PIP_ARGS_ENV, ""))
    targets = requirements
    if local_path is not None:
        targets = _local_pip_targets(candidate, source, local_path, requirements, args)
    elif offline and "--no-index" not in args:
        raise DownloadError(
            f"offline mode (--offline or {OFFLINE_ENV}=1): not running pip install {' '.join(targets)} "
            f"for {candidate.label}, which would reach the package index",
            hint="pass a wheel or a directory of wheels with --local_path=PATH, or point pip at a local "
                 f"directory with {PIP_ARGS_ENV}='--no-index --find-links DIR'")
    target = stage / str(source.get("target_subdir") or "")
    argv = [python, "-m", "pip", "install", "--target", str(target), *args, *targets]
    timeout = float(source.get("timeout_s") or PIP_TIMEOUT_S)
    ctx.info("running pip install " + " ".join(targets))
    pip_env = dict(env)
    pip_env.pop("PYTHONPATH", None)  # pip itself must run from the interpreter's own site-packages
    _run_checked(argv, env=pip_env, timeout=timeout, what=f"pip install for {candidate.label}",
                 hint="check the requirement and pip's registry settings; for a machine without a registry, "
                      "pass a wheel or a directory of wheels with --local_path=PATH")
    version = _installed_version(target, requirements[0])
    import_name = source.get("import_name")
    if import_name:
        check_env = dict(env)
        check_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
        _run_checked([python, "-c", f"import {import_name}"], env=check_env, timeout=IMPORT_CHECK_TIMEOUT_S,
                     what=f"import {import_name} after installing {candidate.label}", cwd=stage)
    return version


def _local_pip_targets(candidate: Candidate, source: Mapping, path: Path, requirements: list[str],
                       args: list[str]) -> list[str]:
    """What pip installs for ``--local_path``: the requirements from a directory (added to ``args``), or the file."""
    if path.is_dir():
        args += ["--no-index", "--find-links", str(path)]
        return requirements
    if not path.is_file():
        raise NotFound(f"local file {path} does not exist", hint="check the --local_path value")
    checker = Checker.from_meta(source)
    if checker is not None:
        try:
            checker.check(path)
        except ChecksumMismatch as exc:
            exc.hint = f"{path} is not the file {candidate.label} describes; nothing was installed"
            raise
    return [str(path.resolve())]


def already_available(
    ctx: Context, candidate: Candidate, source: Mapping, *, python: str, python_env: str | None,
    requested_version: str | None,
) -> EnvRecord | None:
    """The env of the soft that already finds this pip package in ``python`` (and accepts its version)."""
    soft = candidate.meta.get("soft")
    if not soft:
        return None
    found = detect_available(ctx, soft, python=python, python_env=python_env)
    if found is None:
        return None
    requirements = pip_requirements(candidate, source, requested_version=requested_version)
    if not _version_satisfies(found.version, requirements[0]):
        ctx.info(f"{python} has {soft} {found.version}, which {requirements[0]} does not accept; installing")
        return None
    ctx.info(f"{candidate.label}: {soft} {found.version} is already available in {python} "
             f"(env {found.uid}); not installing it again (--force installs a separate copy)")
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
