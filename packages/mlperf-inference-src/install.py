"""Install hook: the MLPerf inference source tree, cloned at its tag or copied from a directory on disk."""

from __future__ import annotations

import pathlib as _pathlib
import shutil as _shutil
import subprocess as _subprocess
import typing as _typing

from ckx.core.errors import CkxError as _CkxError
from ckx.core.errors import IntegrityError as _IntegrityError
from ckx.core.errors import MetaError as _MetaError

_GIT_TIMEOUT_S = 900
# Only the tools ckx runs: the checker, the compliance tests, the accuracy scripts and LoadGen's conf.
_KEEP = ("tools", "compliance", "vision/classification_and_detection/tools", "loadgen/mlperf.conf", "LICENSE.md",
         "README.md")


def install(
    *,
    install_dir: _pathlib.Path,
    meta: dict,
    downloaded: _pathlib.Path | None,
    info: _typing.Callable[[str], None],
) -> dict[str, str] | None:
    """Fill ``install_dir`` from ``downloaded`` (a directory given with --local_path) or a git clone at the tag."""
    if downloaded is not None:
        info(f"copying the MLPerf inference tools from {downloaded}")
        _copy_tools(downloaded, install_dir)
        revision = "local copy of " + str(downloaded)
    else:
        git = meta.get("git") or {}
        url, tag = git.get("url"), git.get("tag")
        if not url or not tag:
            raise _MetaError(f"{meta.get('alias')}: meta.json needs git.url and git.tag")
        clone = install_dir / "clone"
        info(f"cloning {url} at {tag}")
        _git(["git", "clone", "--depth", "1", "--branch", str(tag), str(url), str(clone)], tag)
        _copy_tools(clone, install_dir)
        _shutil.rmtree(clone)
        revision = f"{url} {tag}"
    missing = [name for name in meta.get("needed_files") or [] if not (install_dir / name).is_file()]
    if missing:
        raise _IntegrityError(f"the MLPerf inference source lacks {', '.join(missing)}")
    (install_dir / "ckx-source.txt").write_text(revision + "\n", encoding="utf-8")
    return None


def _git(argv: list[str], tag: str) -> None:
    try:
        proc = _subprocess.run(argv, capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=False,
                               stdin=_subprocess.DEVNULL)
    except FileNotFoundError:
        raise _CkxError("git is not installed; install it, or pass --local_path=DIR with a copy of the source") from None
    except _subprocess.TimeoutExpired:
        raise _CkxError(f"git clone did not finish within {_GIT_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise _CkxError(f"git clone of the MLPerf inference source at {tag} failed:\n{tail}\n"
                        "(with no network: ckx install package --tags=mlperf,inference,src --local_path=DIR)")


def _copy_tools(source: _pathlib.Path, install_dir: _pathlib.Path) -> None:
    if not (source / "compliance").is_dir() or not (source / "tools" / "submission").is_dir():
        raise _CkxError(f"{source} is not an MLPerf inference source tree (no compliance/ or tools/submission/)")
    for name in _KEEP:
        item = source / name
        target = install_dir / name
        if item.is_dir():
            _shutil.copytree(item, target, symlinks=False, dirs_exist_ok=True,
                             ignore=_shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif item.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            _shutil.copy2(item, target)
