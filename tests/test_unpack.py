"""Tests for ckx.transfer.unpack: round trips, format detection by magic, and every refused member kind."""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from ckx.core.errors import CkxError, IntegrityError, UnsafeArchive, UsageError
from ckx.transfer.unpack import detect_format, unpack

TREE = {
    "top/a.txt": b"alpha\n",
    "top/sub/b.bin": bytes(range(256)) * 40,
    "top/run.sh": b"#!/bin/sh\necho hi\n",
}


# --------------------------------------------------------------------------- archive builders


def tar_bytes(entries: list[tuple], compression: str = "") -> bytes:
    """Build a tar in memory. Entries: (kind, name, payload[, mode]) with kind file/dir/symlink/
    hardlink/chr/fifo; payload is the data for files and the link target for links."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as tar:
        for kind, name, *rest in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            payload = rest[0] if rest else None
            if kind == "file":
                info.size = len(payload)
                info.mode = rest[1] if len(rest) > 1 else 0o644
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE,
            }[kind]
            info.mode = 0o755 if kind == "dir" else 0o644
            if kind in ("symlink", "hardlink"):
                info.linkname = payload
            tar.addfile(info)
    return buffer.getvalue()


def zip_bytes(entries: list[tuple]) -> bytes:
    """Build a zip in memory. Entries: (kind, name, payload[, mode]) with kind file/dir/symlink."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for kind, name, *rest in entries:
            info = zipfile.ZipInfo(name, date_time=(2021, 1, 2, 3, 4, 6))
            info.create_system = 3
            if kind == "file":
                info.external_attr = (stat.S_IFREG | (rest[1] if len(rest) > 1 else 0o644)) << 16
                zf.writestr(info, rest[0])
            elif kind == "dir":
                info.filename = name.rstrip("/") + "/"
                info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
                zf.writestr(info, b"")
            elif kind == "symlink":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, rest[0])
    return buffer.getvalue()


def tree_entries() -> list[tuple]:
    return [("dir", "top"), ("dir", "top/sub")] + [
        ("file", name, data, 0o755 if name.endswith(".sh") else 0o644) for name, data in TREE.items()
    ]


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def assert_tree(target: Path) -> None:
    for name, data in TREE.items():
        assert (target / name).read_bytes() == data
    assert os.stat(target / "top/run.sh").st_mode & 0o111
    assert not os.stat(target / "top/a.txt").st_mode & 0o111


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(directory for archives, target directory that does not exist yet)."""
    return tmp_path / "in", tmp_path / "out" / "target"


def assert_nothing_extracted(target: Path) -> None:
    assert not target.exists()
    leftovers = list(target.parent.iterdir()) if target.parent.exists() else []
    assert leftovers == [], f"staging left behind: {leftovers}"


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    ("name", "compression", "fmt"),
    [
        ("t.tar", "", "tar"),
        ("t.tar.gz", "gz", "tar.gz"),
        ("t.tgz", "gz", "tar.gz"),
        ("t.tar.bz2", "bz2", "tar.bz2"),
        ("t.tar.xz", "xz", "tar.xz"),
    ],
)
def test_tar_round_trip(dirs, name: str, compression: str, fmt: str) -> None:
    src, target = dirs
    archive = write(src / name, tar_bytes(tree_entries(), compression))
    assert detect_format(archive) == fmt
    paths = unpack(archive, target)
    assert paths == [target / "top", target / "top/sub", *(target / n for n in TREE)]
    assert_tree(target)
    assert os.stat(target / "top/a.txt").st_mtime == 1_600_000_000
    assert sorted(p.name for p in target.parent.iterdir()) == ["target"]


def test_zip_round_trip(dirs) -> None:
    src, target = dirs
    archive = write(src / "t.zip", zip_bytes(tree_entries()))
    assert detect_format(archive) == "zip"
    paths = unpack(archive, target)
    assert set(paths) == {target / "top", target / "top/sub", *(target / n for n in TREE)}
    assert_tree(target)


def test_plain_gz_round_trip(dirs) -> None:
    src, target = dirs
    archive = write(src / "weights.bin.gz", gzip.compress(TREE["top/sub/b.bin"]))
    assert detect_format(archive) == "gz"
    assert unpack(archive, target) == [target / "weights.bin"]
    assert (target / "weights.bin").read_bytes() == TREE["top/sub/b.bin"]


def test_strip_components(dirs) -> None:
    src, target = dirs
    archive = write(src / "t.tar.gz", tar_bytes(tree_entries(), "gz"))
    paths = unpack(archive, target, strip_components=1)
    assert paths == [target / "sub", target / "a.txt", target / "sub/b.bin", target / "run.sh"]
    assert (target / "sub/b.bin").read_bytes() == TREE["top/sub/b.bin"]
    with pytest.raises(UsageError):
        unpack(archive, target, strip_components=-1)


def test_modes_are_sanitised(dirs) -> None:
    src, target = dirs
    archive = write(src / "t.tar", tar_bytes([("file", "suid", b"x", 0o6777), ("file", "ro", b"y", 0o444)]))
    unpack(archive, target)
    assert stat.S_IMODE(os.stat(target / "suid").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(target / "ro").st_mode) == 0o644


def test_safe_internal_links_are_kept(dirs) -> None:
    src, target = dirs
    entries = [
        ("file", "lib/libx.so.1", b"ELF"),
        ("symlink", "lib/libx.so", "libx.so.1"),
        ("symlink", "current", "lib"),
        ("symlink", "up", "lib/../lib/libx.so"),
        ("hardlink", "bin/copy", "lib/libx.so.1"),
    ]
    archive = write(src / "t.tar", tar_bytes(entries))
    unpack(archive, target)
    assert os.readlink(target / "lib/libx.so") == "libx.so.1"
    assert (target / "current/libx.so").read_bytes() == b"ELF"
    assert (target / "up").read_bytes() == b"ELF"
    assert os.stat(target / "bin/copy").st_ino == os.stat(target / "lib/libx.so.1").st_ino


def test_duplicate_files_last_one_wins(dirs) -> None:
    src, target = dirs
    archive = write(src / "t.tar", tar_bytes([("file", "f", b"old"), ("file", "./f", b"new")]))
    assert unpack(archive, target) == [target / "f"]
    assert (target / "f").read_bytes() == b"new"


# --------------------------------------------------------------------------- format detection


def test_detect_format_by_magic_not_extension(tmp_path: Path) -> None:
    cases = {
        "looks.zip": (tar_bytes(tree_entries(), "gz"), "tar.gz"),
        "looks.tar": (zip_bytes(tree_entries()), "zip"),
        "looks.gz": (tar_bytes(tree_entries()), "tar"),
        "noext1": (tar_bytes(tree_entries(), "bz2"), "tar.bz2"),
        "noext2": (tar_bytes(tree_entries(), "xz"), "tar.xz"),
        "data.tgz": (gzip.compress(b"just text"), "gz"),
    }
    for name, (data, fmt) in cases.items():
        assert detect_format(write(tmp_path / name, data)) == fmt, name


def test_misnamed_archive_unpacks_by_its_real_format(dirs) -> None:
    src, target = dirs
    archive = write(src / "model.zip", tar_bytes(tree_entries(), "xz"))
    unpack(archive, target)
    assert_tree(target)


@pytest.mark.parametrize(
    "data",
    [b"<html>404 Not Found</html>" * 30, bz2.compress(b"plain text"), lzma.compress(b"plain text"), b""],
    ids=["html", "bz2-not-tar", "xz-not-tar", "empty"],
)
def test_unknown_format_is_an_integrity_error(dirs, data: bytes) -> None:
    src, target = dirs
    archive = write(src / "x.tar.gz", data)
    with pytest.raises(IntegrityError, match="not an archive"):
        detect_format(archive)
    with pytest.raises(IntegrityError):
        unpack(archive, target)
    assert_nothing_extracted(target)


# --------------------------------------------------------------------------- refused archives

GOOD = ("file", "good.txt", b"harmless")

UNSAFE_TARS = {
    "dotdot": ([GOOD, ("file", "../evil", b"x")], "../evil"),
    "dotdot-inside": ([GOOD, ("file", "a/../../evil", b"x")], "a/../../evil"),
    "absolute": ([GOOD, ("file", "/etc/x", b"x")], "/etc/x"),
    "symlink-out": ([GOOD, ("symlink", "sub/link", "../../outside")], "sub/link"),
    "symlink-absolute": ([GOOD, ("symlink", "link", "/etc/passwd")], "link"),
    "symlink-chain-out": ([GOOD, ("symlink", "here", "."), ("symlink", "esc", "here/..")], "esc"),
    "symlink-loop": ([GOOD, ("symlink", "a", "b"), ("symlink", "b", "a")], "a"),
    "write-through-symlink": ([GOOD, ("dir", "sub"), ("symlink", "s", "sub"), ("file", "s/f", b"x")], "s/f"),
    "hardlink-out": ([GOOD, ("hardlink", "hl", "../outside")], "hl"),
    "hardlink-absolute": ([GOOD, ("hardlink", "hl", "/etc/passwd")], "hl"),
    "hardlink-not-member": ([GOOD, ("hardlink", "hl", "missing.txt")], "hl"),
    "hardlink-to-symlink": ([GOOD, ("symlink", "s", "good.txt"), ("hardlink", "hl", "s")], "hl"),
    "char-device": ([GOOD, ("chr", "dev/null")], "dev/null"),
    "fifo": ([GOOD, ("fifo", "pipe")], "pipe"),
    "file-and-dir": ([GOOD, ("file", "x", b"1"), ("dir", "x")], "x"),
    "below-a-file": ([GOOD, ("file", "x", b"1"), ("file", "x/y", b"2")], "x/y"),
}


@pytest.mark.parametrize("case", list(UNSAFE_TARS))
@pytest.mark.parametrize("compression", ["", "gz"])
def test_unsafe_tar_is_refused_and_nothing_extracted(dirs, case: str, compression: str) -> None:
    src, target = dirs
    entries, bad_member = UNSAFE_TARS[case]
    archive = write(src / f"bad.tar{'.gz' if compression else ''}", tar_bytes(entries, compression))
    assert bad_member in tarfile.open(archive).getnames()  # the builder kept the hostile name
    with pytest.raises(UnsafeArchive) as info:
        unpack(archive, target)
    assert info.value.exit_code == 5
    assert str(archive) in str(info.value) and repr(bad_member) in str(info.value)
    assert_nothing_extracted(target)
    assert not (src.parent / "evil").exists() and not (src.parent / "outside").exists()


def test_dotdot_is_refused_even_when_strip_would_hide_it(dirs) -> None:
    src, target = dirs
    archive = write(src / "bad.tar", tar_bytes([("file", "top/../../evil", b"x")]))
    with pytest.raises(UnsafeArchive):
        unpack(archive, target, strip_components=1)


UNSAFE_ZIPS = {
    "dotdot": ([GOOD, ("file", "../evil", b"x")], "../evil"),
    "backslash-dotdot": ([GOOD, ("file", "..\\evil", b"x")], "..\\evil"),
    "absolute": ([GOOD, ("file", "/etc/x", b"x")], "/etc/x"),
    "symlink-entry": ([GOOD, ("symlink", "link", "good.txt")], "link"),
}


@pytest.mark.parametrize("case", list(UNSAFE_ZIPS))
def test_unsafe_zip_is_refused_and_nothing_extracted(dirs, case: str) -> None:
    src, target = dirs
    entries, bad_member = UNSAFE_ZIPS[case]
    archive = write(src / "bad.zip", zip_bytes(entries))
    assert bad_member in zipfile.ZipFile(archive).namelist()
    with pytest.raises(UnsafeArchive) as info:
        unpack(archive, target)
    assert info.value.exit_code == 5
    assert str(archive) in str(info.value) and repr(bad_member) in str(info.value)
    if case == "symlink-entry":
        assert "symlink" in str(info.value)
    assert_nothing_extracted(target)


def test_symlink_through_existing_target_link_is_refused(dirs, tmp_path: Path) -> None:
    src, target = dirs
    target.mkdir(parents=True)
    (target / "out").symlink_to(tmp_path)  # put there by someone else, pointing outside
    archive = write(src / "t.tar", tar_bytes([("symlink", "x", "out/secret")]))
    with pytest.raises(UnsafeArchive):
        unpack(archive, target)
    assert sorted(p.name for p in target.iterdir()) == ["out"]


# --------------------------------------------------------------------------- failures mid-way and targets


def corrupt_second_member(data: bytes) -> bytes:
    """Flip a byte in the stored data of the zip's second file (its CRC no longer matches)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.infolist()[1]
    header = info.header_offset
    name_len = int.from_bytes(data[header + 26 : header + 28], "little")
    extra_len = int.from_bytes(data[header + 28 : header + 30], "little")
    offset = header + 30 + name_len + extra_len + 3
    return data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :]


def test_corrupt_member_mid_extraction_leaves_no_partial_target(dirs) -> None:
    src, target = dirs
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("first.txt", b"first member, extracted before the failure")
        zf.writestr("second.bin", bytes(range(256)) * 100)
    archive = write(src / "t.zip", corrupt_second_member(buffer.getvalue()))
    with pytest.raises(IntegrityError, match="corrupt"):
        unpack(archive, target)
    assert_nothing_extracted(target)


def test_truncated_tar_gz_is_an_integrity_error(dirs) -> None:
    src, target = dirs
    data = tar_bytes(tree_entries(), "gz")
    archive = write(src / "t.tar.gz", data[: len(data) // 2])
    with pytest.raises(IntegrityError):
        unpack(archive, target)
    assert_nothing_extracted(target)


def test_truncated_gz_is_an_integrity_error(dirs) -> None:
    src, target = dirs
    data = gzip.compress(os.urandom(50_000))
    archive = write(src / "w.gz", data[: len(data) // 2])
    with pytest.raises(IntegrityError):
        unpack(archive, target)
    assert_nothing_extracted(target)


def test_existing_empty_target_is_replaced(dirs) -> None:
    src, target = dirs
    target.mkdir(parents=True)
    unpack(write(src / "t.zip", zip_bytes(tree_entries())), target)
    assert_tree(target)


def test_existing_target_with_other_files_is_merged(dirs) -> None:
    src, target = dirs
    write(target / "archive.tar", b"kept")
    unpack(write(src / "t.tar", tar_bytes(tree_entries())), target)
    assert_tree(target)
    assert (target / "archive.tar").read_bytes() == b"kept"
    assert sorted(p.name for p in target.parent.iterdir()) == ["target"]


def test_clash_with_existing_entry_changes_nothing(dirs) -> None:
    src, target = dirs
    write(target / "top" / "mine.txt", b"mine")
    with pytest.raises(CkxError, match="already exist"):
        unpack(write(src / "t.tar", tar_bytes(tree_entries())), target)
    assert [p.name for p in target.iterdir()] == ["top"]
    assert [p.name for p in (target / "top").iterdir()] == ["mine.txt"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["target"]


def test_target_that_is_a_file_is_an_error(dirs) -> None:
    src, target = dirs
    write(target, b"a file")
    with pytest.raises(CkxError, match="not a directory"):
        unpack(write(src / "t.tar", tar_bytes(tree_entries())), target)
    assert target.read_bytes() == b"a file"
