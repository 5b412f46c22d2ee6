"""The one archive-member checker, used by package unpacking and by `ckx unzip`: names, kinds and links.

Refused with UnsafeArchive, before anything is written: NUL bytes; absolute names (``/x``) and
drive letters (``c:x``, ``C:/x``); backslashes (a separator on Windows, so ``a\\..\\x`` could climb);
any ``..`` component; devices, fifos and other special members; zip entries with a symlink mode;
hard links to anything but a regular file of the same archive; members written through a symlink,
or below a file, of the archive; symlinks whose target is absolute or resolves outside the target
directory (following the archive's own symlinks and those already on disk); a name twice with
different kinds, and in a zip any name twice (zip readers disagree about which copy wins). Relative
symlinks that stay inside the target (``libx.so -> libx.so.1``) pass.

Expansion is bounded by the ``archive_*`` fields of ckx.core.limits.Limits (settings.json overrides
them): more than ``archive_max_members`` members, or file members whose sizes add up to more than
``archive_max_bytes`` or to more than ``archive_max_ratio`` times the archive's own size, are refused
while the members are read, before anything is written (a tar.gz's headers are read one by one, so
a bomb is refused without inflating it). The ratio counts only past ``RATIO_FLOOR_BYTES`` expanded
bytes, so a small archive of very regular text is never refused for it. An extractor counts the
bytes it actually writes with ``ArchiveChecker.expansion()`` too, for formats that declare no sizes
(a plain .gz) and in case a member yields more than it declared.
"""
from __future__ import annotations

import os
import stat
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from ckx.core.errors import IntegrityError, UnsafeArchive
from ckx.core.limits import DEFAULT_LIMITS, MIB, Limits

_MAX_LINK_DEPTH = 40
# Below this many expanded bytes the expansion ratio is not checked: nothing that small can hurt.
RATIO_FLOOR_BYTES = 1 * MIB
_LIMITS_HINT = "if the archive is trusted, raise 'limits.{name}' in $CKX_HOME/settings.json"
_KINDS = ("dir", "file", "symlink", "hardlink")


@dataclass(frozen=True)
class Member:
    """One archive member as read, before any check."""

    name: str
    kind: str  # "dir", "file", "symlink", "hardlink", or a description of a refused kind
    link: str = ""
    mode: int = 0o644
    mtime: float | None = None
    ref: object = None  # the TarInfo / ZipInfo, to read the data
    size: int = 0  # the bytes a file member declares (0 when the format declares none)


@dataclass(frozen=True)
class Planned:
    """A member that passed every check: where it goes (relative parts) and what it is."""

    entry: Member
    parts: tuple[str, ...]
    link_parts: tuple[str, ...] = ()  # hardlinks: the member they point to


def _has_drive(text: str) -> bool:
    return len(text) >= 2 and text[1] == ":" and text[0].isalpha()


class Expansion:
    """A running count of an archive's members and expanded bytes; UnsafeArchive past the limits.

    Made by ``ArchiveChecker.expansion()``. ``add_member`` counts one member, ``add_bytes`` bytes
    of one (declared, or as they are written).
    """

    def __init__(self, checker: "ArchiveChecker") -> None:
        self.checker = checker
        self.members = 0
        self.bytes = 0
        limits = checker.limits
        self.max_bytes = limits.archive_max_bytes
        self.limit_name = "archive_max_bytes"
        size = checker.archive_size()
        if size is not None:
            by_ratio = max(limits.archive_max_ratio * size, RATIO_FLOOR_BYTES)
            if by_ratio < self.max_bytes:
                self.max_bytes, self.limit_name = by_ratio, "archive_max_ratio"

    def add_member(self, name: str) -> None:
        """Count member ``name``; UnsafeArchive once there are more than ``archive_max_members``."""
        self.members += 1
        limit = self.checker.limits.archive_max_members
        if self.members > limit:
            raise self.checker.refuse_archive(f"has more than {limit} members (at {name!r})", "archive_max_members")

    def add_bytes(self, name: str, count: int) -> None:
        """Count ``count`` expanded bytes of member ``name``; UnsafeArchive past the byte or ratio bound."""
        self.bytes += max(0, int(count))
        if self.bytes <= self.max_bytes:
            return
        if self.limit_name == "archive_max_ratio":
            why = (f"expands to more than {self.max_bytes} bytes, over {self.checker.limits.archive_max_ratio} "
                   f"times its own size (at {name!r})")
        else:
            why = f"expands to more than {self.max_bytes} bytes (at {name!r})"
        raise self.checker.refuse_archive(why, self.limit_name)


@dataclass(frozen=True)
class ArchiveChecker:
    """Checks the members of ``archive``; ``verb`` ("unpack", "unzip") names the refused operation in errors.

    ``limits`` bounds the members and the expanded bytes (default: the built-in limits; pass
    ``Limits.from_settings(home.settings_path)`` for the user's).
    """

    archive: Path
    verb: str = "unpack"
    limits: Limits = DEFAULT_LIMITS

    def refuse(self, name: str, why: str) -> UnsafeArchive:
        """The error for member ``name``: it names the archive, the member and the rule."""
        return UnsafeArchive(
            f"refusing to {self.verb} {self.archive}: member {name!r} {why}",
            hint="the archive is unsafe or malformed; nothing was written",
        )

    def refuse_archive(self, why: str, limit: str) -> UnsafeArchive:
        """The error for an archive over the limit named ``limit`` (a field of Limits)."""
        return UnsafeArchive(f"refusing to {self.verb} {self.archive}: it {why}; nothing was written",
                             hint=_LIMITS_HINT.format(name=limit))

    def archive_size(self) -> int | None:
        """The archive's size on disk in bytes (None when it cannot be read: the ratio is then not checked)."""
        try:
            return Path(self.archive).stat().st_size
        except OSError:
            return None

    def expansion(self) -> Expansion:
        """A fresh count of members and bytes under this checker's limits (for an extractor's writes)."""
        return Expansion(self)

    def parts(self, name: str, *, link_of: str | None = None) -> tuple[str, ...]:
        """The components of a member name (or of the hard link target of member ``link_of``).

        Raises UnsafeArchive for NUL bytes, backslashes, absolute names, drive letters and ``..``.
        """
        member, prefix = (link_of, f"is a hard link to {name!r}, which ") if link_of else (name, "")
        if "\0" in name:
            raise self.refuse(member, prefix + "contains a NUL byte")
        if "\\" in name:
            raise self.refuse(member, prefix + "contains a backslash (a path separator on Windows)")
        if name.startswith("/"):
            raise self.refuse(member, prefix + "has an absolute path")
        if _has_drive(name):
            raise self.refuse(member, prefix + "starts with a drive letter")
        parts = tuple(p for p in name.split("/") if p not in ("", "."))
        if ".." in parts:
            raise self.refuse(member, prefix + "has a '..' component")
        return parts

    def check(
        self,
        entries: Iterable[Member],
        *,
        strip: int = 0,
        disk_root: Path | None = None,
        unique: bool = False,
    ) -> list[Planned]:
        """Check every entry; return what to extract (archive order, one per path) or raise UnsafeArchive.

        ``strip`` drops leading components (after the name is checked whole); ``disk_root`` is an
        existing target whose own symlinks count when resolving link targets; ``unique`` refuses any
        name seen twice (directories aside), as zips need. The members and the sizes they declare are
        counted against the limits as they are read (pass a generator to stop reading at the first
        member over them).
        """
        by_path: dict[tuple[str, ...], Planned] = {}
        order: list[tuple[str, ...]] = []
        declared = self.expansion()
        for entry in entries:
            declared.add_member(entry.name)
            if entry.kind == "file":
                declared.add_bytes(entry.name, entry.size)
            if entry.kind not in _KINDS:
                raise self.refuse(entry.name, f"is a {entry.kind}")
            parts = self.parts(entry.name)[strip:]
            if not parts:
                continue  # the archive root ("./"), or a member removed by strip_components
            link_parts: tuple[str, ...] = ()
            if entry.kind == "hardlink":
                link_parts = self.parts(entry.link, link_of=entry.name)[strip:]
            elif entry.kind == "symlink":
                self._check_symlink_text(entry)
            previous = by_path.get(parts)
            if previous is None:
                order.append(parts)
            elif previous.entry.kind != entry.kind or entry.kind in ("symlink", "hardlink") or (
                    unique and entry.kind != "dir"):
                raise self.refuse(entry.name, f"appears twice (as {previous.entry.kind} and {entry.kind})")
            by_path[parts] = Planned(entry, parts, link_parts)
        symlinks = {parts: p.entry.link for parts, p in by_path.items() if p.entry.kind == "symlink"}
        for parts in order:
            planned = by_path[parts]
            self._check_parents(planned, by_path)
            if planned.entry.kind == "hardlink":
                target = by_path.get(planned.link_parts)
                if target is None or target.entry.kind != "file":
                    raise self.refuse(
                        planned.entry.name,
                        f"is a hard link to {planned.entry.link!r}, which is not a regular file of the archive",
                    )
            elif planned.entry.kind == "symlink":
                lookup = _link_lookup(symlinks, disk_root)
                if _resolve(parts[:-1], planned.entry.link, lookup, 0) is None:
                    raise self.refuse(
                        planned.entry.name,
                        f"is a symlink to {planned.entry.link!r}, which leaves the target directory (or loops)",
                    )
        return [by_path[parts] for parts in order]

    def _check_symlink_text(self, entry: Member) -> None:
        link = entry.link
        if not link or "\0" in link or "\\" in link:
            raise self.refuse(entry.name, f"is a symlink with an invalid target {link!r}")
        if link.startswith("/") or _has_drive(link):
            raise self.refuse(entry.name, f"is a symlink to the absolute path {link!r}")

    def _check_parents(self, planned: Planned, by_path: Mapping[tuple[str, ...], Planned]) -> None:
        """A member may not be written through a symlink, nor below a file, of the same archive."""
        for depth in range(1, len(planned.parts)):
            parent = by_path.get(planned.parts[:depth])
            if parent is None or parent.entry.kind == "dir":
                continue
            what = "through the symlink" if parent.entry.kind == "symlink" else "below the file"
            raise self.refuse(planned.entry.name, f"would be written {what} {parent.entry.name!r}")

    def zip_members(self, zf: zipfile.ZipFile) -> Iterator[Member]:
        """The members of a zip as read (symlink and special modes become refused kinds).

        Raises IntegrityError for an encrypted member.
        """
        for info in zf.infolist():
            unix_mode = info.external_attr >> 16 if info.create_system == 3 else 0
            file_type = stat.S_IFMT(unix_mode)
            if info.flag_bits & 0x1:
                raise IntegrityError(f"cannot {self.verb} {self.archive}: member {info.filename!r} is encrypted")
            if stat.S_ISLNK(unix_mode):
                kind = "symlink entry (zip symlinks are not extracted)"
            elif info.is_dir() or stat.S_ISDIR(unix_mode):
                kind = "dir"
            elif file_type in (0, stat.S_IFREG):
                kind = "file"
            else:
                kind = f"special file (mode {oct(unix_mode)})"
            mtime = time.mktime((*info.date_time, 0, 0, -1))
            yield Member(info.filename, kind, "", unix_mode & 0o7777 or 0o644, mtime, info, info.file_size)

    def no_links_on_disk(self, root: Path, parts: tuple[str, ...]) -> None:
        """Refuse a destination reached through a symlink below ``root`` (a link planted on disk)."""
        path = root
        for part in parts[:-1]:
            path = path / part
            if path.is_symlink():
                raise self.refuse("/".join(parts), f"would be written through the symlink {path}")
            if not path.exists():
                return


def tar_members(tar: tarfile.TarFile) -> Iterator[Member]:
    """The members of a tar as read, one header at a time (devices, fifos and unknown types become refused kinds)."""
    for info in tar:
        if info.isreg():
            kind = "file"
        elif info.isdir():
            kind = "dir"
        elif info.issym():
            kind = "symlink"
        elif info.islnk():
            kind = "hardlink"
        elif info.ischr() or info.isblk():
            kind = "device"
        elif info.isfifo():
            kind = "fifo"
        else:
            kind = f"member of unsupported type {info.type!r}"
        yield Member(info.name, kind, info.linkname, info.mode, float(info.mtime), info, info.size if kind == "file" else 0)


def _link_lookup(
    symlinks: Mapping[tuple[str, ...], str], disk_root: Path | None
) -> Callable[[tuple[str, ...]], str | None]:
    """Find the symlink at a relative path: the archive's own first, then one already on disk."""

    def lookup(parts: tuple[str, ...]) -> str | None:
        if parts in symlinks:
            return symlinks[parts]
        if disk_root is not None:
            path = disk_root.joinpath(*parts)
            if path.is_symlink():
                return os.readlink(path)
        return None

    return lookup


def _resolve(
    start: tuple[str, ...],
    target: str,
    lookup: Callable[[tuple[str, ...]], str | None],
    depth: int,
) -> tuple[str, ...] | None:
    """Resolve ``target`` from the directory ``start`` inside the root; None when it escapes (or loops)."""
    if depth > _MAX_LINK_DEPTH or target.startswith("/"):
        return None
    stack = list(start)
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return None
            stack.pop()
            continue
        stack.append(part)
        link = lookup(tuple(stack))
        if link is not None:
            stack.pop()
            resolved = _resolve(tuple(stack), link, lookup, depth + 1)
            if resolved is None:
                return None
            stack = list(resolved)
    return tuple(stack)


__all__ = ["RATIO_FLOOR_BYTES", "ArchiveChecker", "Expansion", "Member", "Planned", "tar_members"]
