"""Safe archive extraction: every member checked before any is written, staged, then moved into place.

Formats (found by magic bytes, not by extension): tar, tar.gz/tgz, tar.bz2, tar.xz, zip, and a
plain .gz holding one file. Refused with UnsafeArchive (nothing is extracted): absolute names,
any ``..`` component, devices, fifos and other special members, zip entries with a symlink mode,
hard links to anything but a regular file of the same archive, members written through a
symlink of the archive, and symlinks whose target is absolute or resolves outside the target
directory (resolution follows the archive's own symlinks, so ``a -> .`` then ``b -> a/..`` is
caught). Relative symlinks that stay inside the target directory are kept (``libx.so -> libx.so.1``).

Extraction writes into a staging directory beside the target and renames it into place, so a
failure half-way (corrupt data, full disk) leaves no partial target. Modes are sanitised (no
set-uid/set-gid/sticky bits, no group/other write); owners are never changed.
"""
from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator, Mapping

from ckx.transfer.checksum import CHUNK_SIZE
from ckx.core.errors import CkxError, IntegrityError, UnsafeArchive, UsageError

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("tar", "tar.gz", "tar.bz2", "tar.xz", "zip", "gz")
_TAR_MODES = {"tar": "r:", "tar.gz": "r:gz", "tar.bz2": "r:bz2", "tar.xz": "r:xz"}
_MAX_LINK_DEPTH = 40
# Errors that mean the archive's data is corrupt or truncated (as opposed to our disk failing).
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)


@dataclass(frozen=True)
class _Entry:
    """One archive member as read, before any check."""

    name: str
    kind: str  # "dir", "file", "symlink", "hardlink", or a description of a refused kind
    link: str = ""
    mode: int = 0o644
    mtime: float | None = None
    ref: object = None  # the TarInfo / ZipInfo, to read the data


@dataclass(frozen=True)
class _Planned:
    """A member that passed every check: where it goes (relative parts) and what it is."""

    entry: _Entry
    parts: tuple[str, ...]
    link_parts: tuple[str, ...] = ()  # hardlinks: the member they point to


# --------------------------------------------------------------------------- format detection


def detect_format(path: str | os.PathLike[str]) -> str:
    """The archive format of ``path`` from its magic bytes: one of ``FORMATS``.

    Compressed files are peeked into: gzip data holding a tar is ``tar.gz``, otherwise ``gz``.
    Raises IntegrityError when the file is none of the supported formats.
    """
    path = Path(path)
    with open(path, "rb") as stream:
        head = stream.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "tar.gz" if _peek_is_tar(gzip.open, path) else "gz"
    if head[:3] == b"BZh" and _peek_is_tar(bz2.open, path):
        return "tar.bz2"
    if head[:6] == b"\xfd7zXZ\x00" and _peek_is_tar(lzma.open, path):
        return "tar.xz"
    if _is_tar_header(head):
        return "tar"
    if zipfile.is_zipfile(path):  # a zip with data in front of it (self-extracting)
        return "zip"
    raise IntegrityError(
        f"{path} is not an archive ckx can unpack (magic bytes {head[:8].hex()})",
        hint=f"supported formats: {', '.join(FORMATS)}; the download may be an error page",
    )


def _peek_is_tar(opener: Callable[..., IO[bytes]], path: Path) -> bool:
    try:
        with opener(path, "rb") as stream:
            return _is_tar_header(stream.read(512))
    except (OSError, EOFError, zlib.error, lzma.LZMAError):
        return False


def _is_tar_header(block: bytes) -> bool:
    """True for a ustar/gnu header, or a v7 header whose checksum field is right."""
    if len(block) < 512:
        return False
    if block[257:262] == b"ustar":
        return True
    field = block[148:156].split(b"\0", 1)[0].strip()
    if not field or any(c not in b"01234567" for c in field):
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:512])
    return int(field, 8) == unsigned


# --------------------------------------------------------------------------- checks


def _refuse(archive: Path, name: str, why: str) -> UnsafeArchive:
    return UnsafeArchive(
        f"refusing to unpack {archive}: member {name!r} {why}",
        hint="the archive is unsafe or malformed; nothing was extracted",
    )


def _clean_parts(archive: Path, name: str, *, link_of: str | None = None) -> tuple[str, ...]:
    """The components of a member name (or of the hard link target of member ``link_of``).

    Raises UnsafeArchive for absolute names, ``..`` components and NUL bytes; a backslash
    counts as a separator, so ``..\\evil`` is refused too.
    """
    member, prefix = (link_of, f"is a hard link to {name!r}, which ") if link_of else (name, "")
    if "\0" in name:
        raise _refuse(archive, member, prefix + "contains a NUL byte")
    text = name.replace("\\", "/")
    if text.startswith("/") or (text[:1].isalpha() and text[1:2] == ":" and text[2:3] in ("", "/")):
        raise _refuse(archive, member, prefix + "has an absolute path")
    parts = tuple(p for p in text.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _refuse(archive, member, prefix + "has a '..' component")
    return parts


def _plan(
    archive: Path,
    entries: Iterable[_Entry],
    strip: int,
    disk_root: Path | None,
) -> list[_Planned]:
    """Check every entry; return what to extract (archive order, one per path) or raise UnsafeArchive.

    ``disk_root`` is an existing target whose own symlinks count when resolving link targets.
    """
    by_path: dict[tuple[str, ...], _Planned] = {}
    order: list[tuple[str, ...]] = []
    for entry in entries:
        if entry.kind not in ("dir", "file", "symlink", "hardlink"):
            raise _refuse(archive, entry.name, f"is a {entry.kind}")
        parts = _clean_parts(archive, entry.name)[strip:]
        if not parts:
            continue  # the archive root ("./"), or a member removed by strip_components
        link_parts: tuple[str, ...] = ()
        if entry.kind == "hardlink":
            link_parts = _clean_parts(archive, entry.link, link_of=entry.name)[strip:]
        elif entry.kind == "symlink":
            _check_symlink_text(archive, entry)
        planned = _Planned(entry, parts, link_parts)
        previous = by_path.get(parts)
        if previous is None:
            order.append(parts)
        elif previous.entry.kind != entry.kind or entry.kind in ("symlink", "hardlink"):
            raise _refuse(archive, entry.name, f"appears twice (as {previous.entry.kind} and {entry.kind})")
        by_path[parts] = planned
    symlinks = {parts: p.entry.link for parts, p in by_path.items() if p.entry.kind == "symlink"}
    for parts in order:
        planned = by_path[parts]
        _check_parents(archive, planned, by_path)
        if planned.entry.kind == "hardlink":
            target = by_path.get(planned.link_parts)
            if target is None or target.entry.kind != "file":
                raise _refuse(
                    archive, planned.entry.name,
                    f"is a hard link to {planned.entry.link!r}, which is not a regular file of the archive",
                )
        elif planned.entry.kind == "symlink":
            lookup = _link_lookup(symlinks, disk_root)
            if _resolve(parts[:-1], planned.entry.link, lookup, 0) is None:
                raise _refuse(
                    archive, planned.entry.name,
                    f"is a symlink to {planned.entry.link!r}, which leaves the target directory (or loops)",
                )
    return [by_path[parts] for parts in order]


def _check_symlink_text(archive: Path, entry: _Entry) -> None:
    link = entry.link
    if not link or "\0" in link or "\\" in link:
        raise _refuse(archive, entry.name, f"is a symlink with an invalid target {link!r}")
    if link.startswith("/"):
        raise _refuse(archive, entry.name, f"is a symlink to the absolute path {link!r}")


def _check_parents(archive: Path, planned: _Planned, by_path: Mapping[tuple[str, ...], _Planned]) -> None:
    """A member may not be written through a symlink, nor below a file, of the same archive."""
    for depth in range(1, len(planned.parts)):
        parent = by_path.get(planned.parts[:depth])
        if parent is None or parent.entry.kind == "dir":
            continue
        what = "through the symlink" if parent.entry.kind == "symlink" else "below the file"
        raise _refuse(archive, planned.entry.name, f"would be written {what} {parent.entry.name!r}")


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


# --------------------------------------------------------------------------- readers


def _tar_entries(tar: tarfile.TarFile) -> Iterator[_Entry]:
    for info in tar.getmembers():
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
        yield _Entry(info.name, kind, info.linkname, info.mode, float(info.mtime), info)


def _zip_entries(archive: Path, zf: zipfile.ZipFile) -> Iterator[_Entry]:
    for info in zf.infolist():
        unix_mode = info.external_attr >> 16 if info.create_system == 3 else 0
        file_type = stat.S_IFMT(unix_mode)
        if info.flag_bits & 0x1:
            raise IntegrityError(f"cannot unpack {archive}: member {info.filename!r} is encrypted")
        if stat.S_ISLNK(unix_mode):
            kind = "symlink entry (zip symlinks are not extracted)"
        elif info.is_dir() or stat.S_ISDIR(unix_mode):
            kind = "dir"
        elif file_type in (0, stat.S_IFREG):
            kind = "file"
        else:
            kind = f"special file (mode {oct(unix_mode)})"
        mtime = time.mktime((*info.date_time, 0, 0, -1))
        yield _Entry(info.filename, kind, "", unix_mode & 0o7777 or 0o644, mtime, info)


# --------------------------------------------------------------------------- unpack


def unpack(
    archive: str | os.PathLike[str],
    target_dir: str | os.PathLike[str],
    *,
    strip_components: int = 0,
) -> list[Path]:
    """Extract ``archive`` into ``target_dir`` and return the extracted paths (archive order).

    ``strip_components`` drops that many leading path components of each member (as tar
    does; a plain .gz has one member, named after the archive without ``.gz``, and no
    components to strip). The target may be missing or empty (it is replaced atomically by the staged tree),
    or hold other files (the archive's top-level entries are then moved in; none may exist).

    Raises UnsafeArchive for a refused member (see the module doc; nothing is extracted),
    IntegrityError for an unknown format or corrupt data, CkxError when the target clashes or
    the disk fails. A failure never leaves a partial target.
    """
    archive = Path(archive)
    target = Path(target_dir)
    if strip_components < 0:
        raise UsageError(f"strip_components must be >= 0, not {strip_components}")
    if not archive.is_file():
        raise CkxError(f"archive {archive} does not exist")
    if target.exists() and not target.is_dir():
        raise CkxError(f"cannot unpack {archive}: {target} exists and is not a directory")
    fmt = detect_format(archive)
    log.debug("unpacking %s (%s) into %s", archive, fmt, target)
    disk_root = target if target.is_dir() else None
    try:
        if fmt == "gz":
            return _unpack_gz(archive, target)
        if fmt == "zip":
            with zipfile.ZipFile(archive) as zf:
                plan = _plan(archive, list(_zip_entries(archive, zf)), strip_components, disk_root)
                return _extract(archive, target, plan, lambda entry: zf.open(entry.ref))  # type: ignore[arg-type]
        with tarfile.open(archive, _TAR_MODES[fmt]) as tar:
            plan = _plan(archive, list(_tar_entries(tar)), strip_components, disk_root)
            return _extract(archive, target, plan, lambda entry: tar.extractfile(entry.ref))  # type: ignore[arg-type]
    except _CORRUPT as exc:
        raise IntegrityError(f"cannot unpack {archive}: corrupt or truncated {fmt} archive ({exc})") from exc


def _gz_member_name(archive: Path) -> str:
    name = archive.name
    for suffix in (".gz", ".gzip", ".z"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _unpack_gz(archive: Path, target: Path) -> list[Path]:
    name = _gz_member_name(archive)
    entry = _Entry(name, "file", mode=archive.stat().st_mode & 0o777, mtime=archive.stat().st_mtime)
    plan = [_Planned(entry, (name,))]
    _check_conflicts(archive, target, plan)
    return _extract(archive, target, plan, lambda _entry: gzip.open(archive, "rb"))


def _check_conflicts(archive: Path, target: Path, plan: list[_Planned]) -> None:
    """In a non-empty target, none of the archive's top-level names may exist already."""
    if not target.is_dir():
        return
    clashes = sorted({p.parts[0] for p in plan if os.path.lexists(target / p.parts[0])})
    if clashes:
        raise CkxError(
            f"cannot unpack {archive} into {target}: {', '.join(clashes)} already exist there",
            hint="remove them, or unpack into an empty directory",
        )


def _extract(
    archive: Path,
    target: Path,
    plan: list[_Planned],
    open_member: Callable[[_Entry], IO[bytes] | None],
) -> list[Path]:
    """Write the checked plan into a staging directory beside ``target``, then move it into place."""
    _check_conflicts(archive, target, plan)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.unpack-", dir=target.parent))
    try:
        os.chmod(stage, 0o755)
        # Directories and files first, then links: nothing is ever written through a link.
        for planned in plan:
            path = stage.joinpath(*planned.parts)
            if planned.entry.kind == "dir":
                path.mkdir(parents=True, exist_ok=True)
            elif planned.entry.kind == "file":
                _write_file(archive, planned.entry, path, open_member)
        for planned in plan:
            path = stage.joinpath(*planned.parts)
            if planned.entry.kind == "hardlink":
                path.parent.mkdir(parents=True, exist_ok=True)
                os.link(stage.joinpath(*planned.link_parts), path)
            elif planned.entry.kind == "symlink":
                path.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(planned.entry.link, path)
        _move_into_place(archive, stage, target)
    except BaseException as exc:
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, _CORRUPT):
            raise CkxError(f"cannot unpack {archive} into {target}: {exc}") from exc
        raise
    return [target.joinpath(*planned.parts) for planned in plan]


def _write_file(
    archive: Path, entry: _Entry, path: Path, open_member: Callable[[_Entry], IO[bytes] | None]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    source = open_member(entry)
    if source is None:
        raise IntegrityError(f"cannot unpack {archive}: no data for member {entry.name!r}")
    with source, open(path, "wb") as out:
        while True:
            try:
                chunk = source.read(CHUNK_SIZE)
            except OSError as exc:  # bz2/gzip report corrupt data as OSError
                raise IntegrityError(f"cannot unpack {archive}: member {entry.name!r} is corrupt ({exc})") from exc
            if not chunk:
                break
            out.write(chunk)
    os.chmod(path, (entry.mode & 0o755) | 0o600)
    if entry.mtime is not None:
        os.utime(path, (entry.mtime, entry.mtime))


def _move_into_place(archive: Path, stage: Path, target: Path) -> None:
    """Rename the staged tree onto a missing or empty target, else move its entries in one by one."""
    if not target.exists() or not any(target.iterdir()):
        try:
            os.replace(stage, target)
            return
        except OSError:
            if not target.is_dir():
                raise
    children = list(stage.iterdir())
    clashes = [child.name for child in children if os.path.lexists(target / child.name)]
    if clashes:
        raise CkxError(f"cannot unpack {archive} into {target}: {', '.join(sorted(clashes))} already exist there")
    for child in children:
        os.replace(child, target / child.name)
    stage.rmdir()
