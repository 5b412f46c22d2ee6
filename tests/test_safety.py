"""Tests for ckx.transfer.safety: one member checker, so package unpacking and `ckx unzip` refuse the same names."""
from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from ckx.api import access
from ckx.core.errors import UnsafeArchive
from ckx.sharing.unzip import unzip_archive
from ckx.transfer.safety import ArchiveChecker, Member
from ckx.transfer.unpack import unpack

GOOD = ("good.txt", b"harmless", None)

# (member name, data, unix mode or None for a plain file)
BAD_MEMBERS = {
    "drive-letter-no-slash": ("c:evil", b"x", None),
    "drive-letter": ("C:/evil", b"x", None),
    "absolute": ("/abs", b"x", None),
    "dotdot": ("../x", b"x", None),
    "nested-dotdot": ("a/../../x", b"x", None),
    "backslash-dotdot": ("a\\..\\x", b"x", None),
    "backslash": ("a\\b.txt", b"x", None),
    "symlink-out": ("link", b"../../outside", stat.S_IFLNK | 0o777),
    "fifo": ("pipe", b"", stat.S_IFIFO | 0o644),
    "char-device": ("dev/null", b"", stat.S_IFCHR | 0o644),
}


def build_zip(path: Path, members: list[tuple[str, bytes, int | None]]) -> Path:
    """A zip with raw member names (zipfile keeps them as given); mode None is a plain file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.create_system = 3
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def everything_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.mark.parametrize("case", list(BAD_MEMBERS))
def test_package_unpacking_refuses_the_member(tmp_path, case):
    name, data, mode = BAD_MEMBERS[case]
    archive = build_zip(tmp_path / "in" / "bad.zip", [GOOD, (name, data, mode)])
    target = tmp_path / "out" / "target"
    with pytest.raises(UnsafeArchive) as info:
        unpack(archive, target)
    assert repr(name) in str(info.value) and str(archive) in str(info.value)
    assert info.value.exit_code == 5
    assert everything_under(tmp_path / "out") == []


@pytest.mark.parametrize("case", list(BAD_MEMBERS))
def test_unzip_refuses_the_member(tmp_path, ckx_home, case):
    name, data, mode = BAD_MEMBERS[case]
    archive = build_zip(tmp_path / "bad.zip", [GOOD, (name, data, mode)])
    access({"action": "list", "module": "experiment"})  # the local repo exists before the unzip
    local = ckx_home / "repos" / "local"
    before = everything_under(local)
    result = access({"action": "unzip", "module": "repo", "zip": str(archive)})
    assert result["return"] == 5, result
    assert repr(name) in result["error"] and "refusing to unzip" in result["error"]
    assert everything_under(local) == before
    assert not (tmp_path / "x").exists() and not (tmp_path / "outside").exists()


@pytest.mark.parametrize("name", ["a/b.txt", "./a/b.txt", "top/", "libx.so.1", "a/c:d", "d..e/f"])
def test_both_paths_accept_ordinary_names(tmp_path, ctx, name):
    data = b"" if name.endswith("/") else b"data"
    archive = build_zip(tmp_path / "ok.zip", [GOOD, (name, data, None)])
    unpack(archive, tmp_path / "unpacked")
    result = unzip_archive(ctx, archive)
    assert result.files >= 1
    assert (tmp_path / "unpacked" / "good.txt").read_bytes() == b"harmless"


def test_a_zip_name_twice_is_refused_by_both_paths(tmp_path, ctx):
    archive = tmp_path / "dup.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("f.txt", b"first")
        with pytest.warns(UserWarning):
            zf.writestr("f.txt", b"second")
    with pytest.raises(UnsafeArchive, match="appears twice"):
        unpack(archive, tmp_path / "target")
    with pytest.raises(UnsafeArchive, match="appears twice"):
        unzip_archive(ctx, archive)


@pytest.mark.parametrize("link", ["../../out", "/etc/passwd", "c:out", "b/../../../out", "..\\..\\out"])
def test_symlinks_out_are_refused_by_the_checker(link):
    checker = ArchiveChecker(Path("x.tar"))
    entries = [Member("a", "dir"), Member("a/link", "symlink", link)]
    with pytest.raises(UnsafeArchive, match="symlink"):
        checker.check(entries)


def test_a_symlink_that_stays_inside_is_kept():
    checker = ArchiveChecker(Path("x.tar"))
    planned = checker.check([Member("lib/libx.so.1", "file"), Member("lib/libx.so", "symlink", "libx.so.1")])
    assert [p.parts for p in planned] == [("lib", "libx.so.1"), ("lib", "libx.so")]


@pytest.mark.parametrize("name", ["a\0b", "a/\0"])
def test_a_nul_byte_is_refused(name):
    with pytest.raises(UnsafeArchive, match="NUL byte"):
        ArchiveChecker(Path("x.tar")).check([Member(name, "file")])


def test_the_error_names_the_operation():
    with pytest.raises(UnsafeArchive, match=r"^refusing to unzip x\.zip: member 'c:evil' starts with a drive letter"):
        ArchiveChecker(Path("x.zip"), verb="unzip").parts("c:evil")
