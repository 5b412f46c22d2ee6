"""Where shared repos land: the files that mark a repo's root, and moving a whole repo into place and registering it."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ckx.core.errors import CkxError
from ckx.store.context import Context
from ckx.store.repo import CK_REPO_FILE, NATIVE_REPO_FILE, Repo

REPO_FILES = (NATIVE_REPO_FILE, CK_REPO_FILE)


def move_and_register(ctx: Context, source: Path, target: Path, name: str, fmt: str, desc: dict,
                      url: str | None, *, what: str, origin: str) -> None:
    """Rename a complete repo directory into place and register it; nothing stays if registering fails."""
    try:
        os.rename(source, target)
    except OSError as exc:
        raise CkxError(f"cannot move {what} to {target}: {exc.strerror}") from None
    repo = Repo(name=name, path=target, format=fmt, uid=desc.get("uid"), url=url,
                deps=tuple(d for d in desc.get("deps", []) if d), exclude_dirs=tuple(desc.get("exclude_dirs", ())), origin=origin)
    try:
        ctx.registry.register(repo)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
