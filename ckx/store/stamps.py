"""Stamps of indexed meta files: one compact list per module, compared with the disk by one stat per file."""
from __future__ import annotations

import os
from array import array
from dataclasses import dataclass
from typing import Iterable

# A stamp is (mtime_ns, ctime_ns, size). The ctime cannot be set from user space, so a meta file that
# was rewritten with its old mtime put back (cp -p, tar, rsync -t, touch -r) still reads as changed.
Stamp = tuple[int, int, int]
_STAT_WITH_DIR_FD = os.stat in os.supports_dir_fd


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
            return self._changed([os.path.join(module_dir, name) for name in self.names], None)
        handle = os.open(module_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return self._changed(self.names, handle)
        finally:
            os.close(handle)

    def _changed(self, paths: list[str], handle: int | None) -> list[int]:
        stat = os.stat
        changed: list[int] = []
        for position, (path, mtime, ctime, size) in enumerate(zip(paths, self.mtimes, self.ctimes, self.sizes)):
            try:
                st = stat(path, dir_fd=handle)
            except (FileNotFoundError, NotADirectoryError):
                changed.append(position)
                continue
            if st.st_mtime_ns != mtime or st.st_ctime_ns != ctime or st.st_size != size:
                changed.append(position)
        return changed
