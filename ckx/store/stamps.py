"""Stamps of indexed meta files: one compact list per module, compared with the disk by one stat per file."""
from __future__ import annotations

import os
import threading
from array import array
from dataclasses import dataclass
from typing import Iterable

# A stamp is (mtime_ns, ctime_ns, size). The ctime cannot be set from user space, so a meta file that
# was rewritten with its old mtime put back (cp -p, tar, rsync -t, touch -r) still reads as changed.
Stamp = tuple[int, int, int]
_STAT_WITH_DIR_FD = os.stat in os.supports_dir_fd
# Above this many files the stats are shared out among threads: a stat spends most of its time in the
# kernel, outside the GIL, so two or more cores check a big module in a fraction of the time.
PARALLEL_FROM = 4096
MAX_THREADS = 4


def stamp_of(st: os.stat_result) -> Stamp:
    """The stamp of a stat result."""
    return st.st_mtime_ns, st.st_ctime_ns, st.st_size


@dataclass(frozen=True)
class ModuleStamps:
    """Every indexed entry of one module directory: row ids, meta paths relative to it, and stamps."""

    ids: array
    names: list[str]
    mtimes: array
    ctimes: array
    sizes: array

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, str, Stamp]]) -> "ModuleStamps":
        """Build from ``(row id, relative meta path, stamp)`` rows."""
        ids, mtimes, ctimes, sizes = array("q"), array("q"), array("q"), array("q")
        names: list[str] = []
        for row_id, name, (mtime, ctime, size) in rows:
            ids.append(row_id)
            names.append(name)
            mtimes.append(mtime)
            ctimes.append(ctime)
            sizes.append(size)
        return cls(ids, names, mtimes, ctimes, sizes)

    def encode(self) -> tuple[bytes, str, bytes]:
        """(ids, names, stamps) for three SQLite columns; NUL cannot occur in a file name."""
        stamps = self.mtimes.tobytes() + self.ctimes.tobytes() + self.sizes.tobytes()
        return self.ids.tobytes(), "\0".join(self.names), stamps

    @classmethod
    def decode(cls, ids: bytes, names: str, stamps: bytes) -> "ModuleStamps":
        """The inverse of :meth:`encode`."""
        row_ids = array("q")
        row_ids.frombytes(ids)
        flat = array("q")
        flat.frombytes(stamps)
        count = len(row_ids)
        if len(flat) != 3 * count:
            raise ValueError(f"stamps of {count} entries hold {len(flat)} numbers")
        listed = names.split("\0") if names else []
        if len(listed) != count:
            raise ValueError(f"stamps of {count} entries hold {len(listed)} names")
        return cls(row_ids, listed, flat[:count], flat[count:2 * count], flat[2 * count:])

    def changed(self, module_dir: str) -> list[int]:
        """Positions of the entries whose meta file is gone or has another stamp than the one indexed.

        One stat per entry and nothing opened; paths resolve from an open handle on the module
        directory, so the kernel walks two or three components per file instead of the whole path.
        """
        if not _STAT_WITH_DIR_FD:
            return self._changed_in_parallel([os.path.join(module_dir, name) for name in self.names], None)
        handle = os.open(module_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return self._changed_in_parallel(self.names, handle)
        finally:
            os.close(handle)

    def _changed_in_parallel(self, paths: list[str], handle: int | None) -> list[int]:
        count = min(MAX_THREADS, os.cpu_count() or 1, len(paths) // PARALLEL_FROM + 1)
        if count <= 1:
            return self._changed(paths, handle, 0, len(paths))
        bounds = [len(paths) * part // count for part in range(count + 1)]
        results: list[list[int]] = [[] for _ in range(count)]
        errors: list[BaseException] = []

        def check(part: int) -> None:
            try:
                results[part] = self._changed(paths, handle, bounds[part], bounds[part + 1])
            except BaseException as exc:  # re-raised below, in the calling thread
                errors.append(exc)

        threads = [threading.Thread(target=check, args=(part,), daemon=True) for part in range(1, count)]
        for thread in threads:
            thread.start()
        check(0)
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return [position for part in results for position in part]

    def _changed(self, paths: list[str], handle: int | None, start: int, stop: int) -> list[int]:
        stat = os.stat
        changed: list[int] = []
        stamps = zip(paths[start:stop], self.mtimes[start:stop], self.ctimes[start:stop], self.sizes[start:stop])
        for position, (path, mtime, ctime, size) in enumerate(stamps, start):
            try:
                st = stat(path, dir_fd=handle)
            except (FileNotFoundError, NotADirectoryError):
                changed.append(position)
                continue
            if st.st_mtime_ns != mtime or st.st_ctime_ns != ctime or st.st_size != size:
                changed.append(position)
        return changed
