"""Staging directories for pull and unzip, and moving a staged result into place all at once.

A staging directory is named ``.KIND-PID-RANDOM`` and holds a lock file that its process keeps locked
while it lives. The lock goes with the process, however it ends (``kill -9`` included), so any later
pull or unzip that finds a staging directory whose lock it can take (or, without a lock file, whose
process is gone) removes it: a killed process leaves nothing that the next one does not clean.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from ckx.core.errors import CkxError

try:
    import fcntl
except ImportError:  # Windows: no flock; staging directories are then judged by their process id alone
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".owner.lock"
# A staging directory without a process id in its name (left by an older ckx) is stale after this long.
_UNNAMED_STALE_S = 3600.0


def _pid_in(name: str, kind: str) -> int | None:
    """The process id in ``.KIND-PID-RANDOM``, or None when the name holds none."""
    head = name[len(kind) + 2:].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_alive(path: Path, kind: str) -> bool:
    """True while the process that made the staging directory ``path`` may still be using it."""
    lock = path / LOCK_NAME
    if fcntl is not None:
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            fd = None
        except OSError:
            return True  # cannot tell: leave it
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True  # locked: its process lives
            finally:
                os.close(fd)
            return False
    pid = _pid_in(path.name, kind)
    if pid is not None:
        return _pid_alive(pid)
    try:
        return time.time() - path.stat().st_mtime < _UNNAMED_STALE_S
    except OSError:
        return False


def clean_stale(parent: Path, kind: str, *, info: Callable[[str], None] | None = None) -> list[Path]:
    """Remove the ``.KIND-*`` staging directories in ``parent`` whose process is gone; returns them."""
    removed: list[Path] = []
    try:
        children = list(os.scandir(parent))
    except OSError:
        return removed
    for child in children:
        if not child.name.startswith(f".{kind}-") or not child.is_dir(follow_symlinks=False):
            continue
        path = Path(child.path)
        if _owner_alive(path, kind):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            removed.append(path)
            if info:
                info(f"removed {path}, left by an interrupted {kind}")
    return removed


def _hold_lock(directory: Path) -> int | None:
    """Create and lock the directory's lock file; the lock lasts as long as the returned descriptor."""
    if fcntl is None:
        return None
    # Locked under a temporary name, then renamed: whoever sees LOCK_NAME sees it locked already.
    tmp = directory / f"{LOCK_NAME}.{os.getpid()}"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.rename(tmp, directory / LOCK_NAME)
    except OSError:  # a filesystem without flock: the process id in the name has to do
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def staging_dir(parent: Path, kind: str, *, info: Callable[[str], None] | None = None) -> Iterator[Path]:
    """A fresh, locked staging directory ``parent/.KIND-PID-RANDOM``, removed on exit.

    Stale staging directories of the same kind in ``parent`` are removed first.
    """
    try:
        parent.mkdir(parents=True, exist_ok=True)
        clean_stale(parent, kind, info=info)
        path = Path(tempfile.mkdtemp(prefix=f".{kind}-{os.getpid()}-", dir=parent))
    except OSError as exc:
        raise CkxError(f"cannot make a staging directory in {parent}: {exc.strerror or exc}") from None
    fd = None
    try:
        fd = _hold_lock(path)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if fd is not None:
            os.close(fd)


class Mover:
    """Moves staged files and directories into place, and puts everything back if one move fails.

    Each destination that exists is first renamed into ``backup_dir`` (on the same filesystem), so
    the moves are renames only; :meth:`rollback` undoes them in reverse order, and removes the
    directories the moves created.
    """

    def __init__(self, backup_dir: Path) -> None:
        self.backup_dir = backup_dir
        self._done: list[tuple[Path, Path | None]] = []
        self._made_dirs: list[Path] = []

    def _parents(self, path: Path) -> None:
        missing = []
        parent = path.parent
        while not os.path.lexists(parent):
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            os.mkdir(directory)
            self._made_dirs.append(directory)

    def move(self, source: Path, dest: Path) -> None:
        """Rename ``source`` to ``dest``, keeping any file already at ``dest`` for a rollback."""
        self._parents(dest)
        backup = None
        if os.path.lexists(dest):
            self.backup_dir.mkdir(parents=True, exist_ok=True)
            backup = self.backup_dir / str(len(self._done))
            os.rename(dest, backup)
        try:
            os.rename(source, dest)
        except BaseException:
            if backup is not None:
                os.rename(backup, dest)
            raise
        self._done.append((dest, backup))

    def rollback(self) -> None:
        """Undo every move made so far (best effort: each step is tried)."""
        for dest, backup in reversed(self._done):
            with contextlib.suppress(OSError):
                if os.path.isdir(dest) and not os.path.islink(dest):
                    shutil.rmtree(dest)
                else:
                    os.unlink(dest)
                if backup is not None:
                    os.rename(backup, dest)
        self._done.clear()
        for directory in reversed(self._made_dirs):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        self._made_dirs.clear()


__all__ = ["LOCK_NAME", "Mover", "clean_stale", "staging_dir"]
