"""Safe archive extraction: every member checked before any is written, staged, then moved into place.

Formats (found by magic bytes, not by extension): tar, tar.gz/tgz, tar.bz2, tar.xz, zip, and a
plain .gz holding one file. Members are checked by ckx.transfer.safety (the checker ``ckx unzip``
uses too): absolute names, drive letters, backslashes, ``..``, devices and other special members,
zip symlinks, hard links out of the archive, and symlinks that leave the target directory are
refused with UnsafeArchive, and nothing is extracted. Relative symlinks that stay inside the
target directory are kept (``libx.so -> libx.so.1``). The same checker bounds the expansion (members,
expanded bytes, ratio to the archive's size: the ``archive_*`` limits): an archive over them is
refused from its headers, and the bytes actually written are counted too (a plain .gz declares no
size; its trailer's size is checked first, then the writing stops at the bound).

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
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Callable

from ckx.transfer.checksum import CHUNK_SIZE
from ckx.core.errors import CkxError, IntegrityError, UsageError
from ckx.core.limits import DEFAULT_LIMITS, Limits
from ckx.transfer.safety import ArchiveChecker, Expansion, Member, Planned, tar_members

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("tar", "tar.gz", "tar.bz2", "tar.xz", "zip", "gz")
_TAR_MODES = {"tar": "r:", "tar.gz": "r:gz", "tar.bz2": "r:bz2", "tar.xz": "r:xz"}
# Errors that mean the archive's data is corrupt or truncated (as opposed to our disk failing).
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile)


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


# --------------------------------------------------------------------------- unpack


def unpack(
    archive: str | os.PathLike[str],
    target_dir: str | os.PathLike[str],
    *,
    strip_components: int = 0,
    limits: Limits | None = None,
) -> list[Path]:
    """Extract ``archive`` into ``target_dir`` and return the extracted paths (archive order).

    ``strip_components`` drops that many leading path components of each member (as tar
    does; a plain .gz has one member, named after the archive without ``.gz``, and no
    components to strip). The target may be missing or empty (it is replaced atomically by the staged tree),
    or hold other files (the archive's top-level entries are then moved in; none may exist).
    ``limits`` bounds the expansion (default: the built-in limits).

    Raises UnsafeArchive for a refused member or an archive over the limits (see the module doc; nothing
    is extracted),
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
    checker = ArchiveChecker(archive, limits=limits or DEFAULT_LIMITS)
    try:
        if fmt == "gz":
            return _unpack_gz(archive, target, checker)
        if fmt == "zip":
            with zipfile.ZipFile(archive) as zf:
                plan = checker.check(checker.zip_members(zf), strip=strip_components, disk_root=disk_root, unique=True)
                return _extract(archive, target, plan, lambda entry: zf.open(entry.ref),  # type: ignore[arg-type]
                                checker.expansion())
        with tarfile.open(archive, _TAR_MODES[fmt]) as tar:
            plan = checker.check(tar_members(tar), strip=strip_components, disk_root=disk_root)
            return _extract(archive, target, plan, lambda entry: tar.extractfile(entry.ref),  # type: ignore[arg-type]
                            checker.expansion())
    except _CORRUPT as exc:
        raise IntegrityError(f"cannot unpack {archive}: corrupt or truncated {fmt} archive ({exc})") from exc


def _gz_member_name(archive: Path) -> str:
    name = archive.name
    for suffix in (".gz", ".gzip", ".z"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _gz_trailer_size(archive: Path) -> int:
    """The size the gzip trailer states (of the last member, modulo 4 GiB): a lower bound of the real size."""
    with open(archive, "rb") as stream:
        try:
            stream.seek(-4, os.SEEK_END)
        except OSError:  # shorter than a trailer: corrupt, as reading it will say
            return 0
        return int.from_bytes(stream.read(4), "little")


def _unpack_gz(archive: Path, target: Path, checker: ArchiveChecker) -> list[Path]:
    name = _gz_member_name(archive)
    entry = Member(name, "file", mode=archive.stat().st_mode & 0o777, mtime=archive.stat().st_mtime,
                   size=_gz_trailer_size(archive))
    plan = checker.check([entry])
    _check_conflicts(archive, target, plan)
    return _extract(archive, target, plan, lambda _entry: gzip.open(archive, "rb"), checker.expansion())


def _check_conflicts(archive: Path, target: Path, plan: list[Planned]) -> None:
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
    plan: list[Planned],
    open_member: Callable[[Member], IO[bytes] | None],
    expansion: Expansion,
) -> list[Path]:
    """Write the checked plan into a staging directory beside ``target``, then move it into place.

    ``expansion`` counts the bytes written; past its bound the extraction stops and the stage is removed.
    """
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
                _write_file(archive, planned.entry, path, open_member, expansion)
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
    archive: Path, entry: Member, path: Path, open_member: Callable[[Member], IO[bytes] | None],
    expansion: Expansion,
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
            expansion.add_bytes(entry.name, len(chunk))
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
