"""Archives are bounded: members, expanded bytes and expansion ratio (the archive_* limits), before anything is written."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from pkgrepo import PackageRepo, assert_nothing_installed, cached_downloads, write_limits

from ckx.core.errors import MetaError, UnsafeArchive
from ckx.core.home import Home
from ckx.core.limits import GIB, MIB, Limits
from ckx.software.resolve import install
from ckx.store.context import Context
from ckx.transfer.safety import RATIO_FLOOR_BYTES, ArchiveChecker, Member
from ckx.transfer.unpack import unpack

ROOT = Path(__file__).resolve().parents[2]
SMALL = Limits(archive_max_bytes=100_000, archive_max_members=20, archive_max_ratio=10)


def incompressible(size: int, seed: str = "x") -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_bytes(files: dict[str, bytes], *, level: int = 6) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def gigabyte_tar_gz_bomb() -> bytes:
    """A valid tar.gz of about 1 MB whose one member is 1 GiB of zeros (concatenated gzip members)."""
    header = tarfile.TarInfo("bomb.bin")
    header.size = GIB
    zeros = gzip.compress(b"\0" * MIB, compresslevel=9)
    trailer = b"\0" * (20 * 512)  # end-of-archive blocks and record padding
    return gzip.compress(header.tobuf(format=tarfile.GNU_FORMAT)) + zeros * 1024 + gzip.compress(trailer)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- the checker ---------------------------------------------------------------------------------------


def test_the_checker_counts_members_as_they_are_read(tmp_path):
    archive = write(tmp_path, "a.tar", b"")
    read: list[int] = []

    def members():
        for number in range(1000):
            read.append(number)
            yield Member(f"f{number}", "file", size=1)

    with pytest.raises(UnsafeArchive) as caught:
        ArchiveChecker(archive, limits=SMALL).check(members())
    assert "more than 20 members" in caught.value.message and "archive_max_members" in caught.value.hint
    assert len(read) == 21  # stopped at the first member over the limit


def test_the_checker_refuses_declared_sizes_over_the_byte_limit(tmp_path):
    archive = write(tmp_path, "a.tar", incompressible(200_000))  # big enough that the ratio allows it
    members = [Member("one", "file", size=60_000), Member("two", "file", size=60_000)]
    with pytest.raises(UnsafeArchive) as caught:
        ArchiveChecker(archive, limits=SMALL.replaced({"archive_max_ratio": 1000})).check(members)
    assert "more than 100000 bytes" in caught.value.message and "'two'" in caught.value.message
    assert "archive_max_bytes" in caught.value.hint


def test_the_ratio_counts_only_past_its_floor(tmp_path):
    archive = write(tmp_path, "tiny.tar.gz", b"x" * 100)
    checker = ArchiveChecker(archive, limits=Limits(archive_max_ratio=2))
    checker.check([Member("text", "file", size=RATIO_FLOOR_BYTES)])
    with pytest.raises(UnsafeArchive) as caught:
        checker.check([Member("text", "file", size=RATIO_FLOOR_BYTES + 1)])
    assert "over 2 times its own size" in caught.value.message and "archive_max_ratio" in caught.value.hint


# -- unpack, every format ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar", "tar.gz", "zip"])
def test_too_many_members_are_refused_with_nothing_written(tmp_path, fmt):
    files = {f"dir/f{n}.txt": b"x" for n in range(30)}
    if fmt == "zip":
        data = zip_bytes(files)
    else:
        data = tar_gz(files)
        data = gzip.decompress(data) if fmt == "tar" else data
    archive = write(tmp_path, f"many.{fmt}", data)
    with pytest.raises(UnsafeArchive) as caught:
        unpack(archive, tmp_path / "out" / "target", limits=SMALL)
    assert "more than 20 members" in caught.value.message
    assert leftovers(tmp_path / "out") == []


@pytest.mark.parametrize("fmt", ["tar", "tar.gz", "zip", "gz"])
def test_more_expanded_bytes_than_the_limit_are_refused(tmp_path, fmt):
    payload = incompressible(150_000)  # ratio about 1: only the byte limit applies
    if fmt == "zip":
        data = zip_bytes({"big.bin": payload})
    elif fmt == "gz":
        data = gzip.compress(payload)
    else:
        data = tar_gz({"big.bin": payload})
        data = gzip.decompress(data) if fmt == "tar" else data
    archive = write(tmp_path, f"big.bin.{fmt}" if fmt == "gz" else f"big.{fmt}", data)
    with pytest.raises(UnsafeArchive) as caught:
        unpack(archive, tmp_path / "out" / "target", limits=SMALL)
    assert "expands to more than 100000 bytes" in caught.value.message
    assert leftovers(tmp_path / "out") == []


def test_a_gz_whose_trailer_lies_is_cut_off_while_it_is_written(tmp_path):
    data = bytearray(gzip.compress(incompressible(3 * MIB)))
    data[-4:] = (10).to_bytes(4, "little")  # the trailer claims 10 bytes
    archive = write(tmp_path, "liar.bin.gz", bytes(data))
    with pytest.raises(UnsafeArchive) as caught:
        unpack(archive, tmp_path / "out" / "target", limits=SMALL)
    assert "expands to more than 100000 bytes" in caught.value.message
    assert leftovers(tmp_path / "out") == []


def test_archives_within_the_limits_unpack(tmp_path):
    files = {f"f{n}.bin": incompressible(4_000, str(n)) for n in range(5)}
    for fmt, data in (("tar.gz", tar_gz(files)), ("zip", zip_bytes(files))):
        paths = unpack(write(tmp_path, f"ok.{fmt}", data), tmp_path / fmt, limits=SMALL)
        assert sorted(p.name for p in paths) == sorted(files)
        assert (tmp_path / fmt / "f3.bin").read_bytes() == files["f3.bin"]


def test_a_megabyte_tar_gz_of_a_gigabyte_is_refused_from_its_header(tmp_path):
    archive = write(tmp_path, "bomb.tar.gz", gigabyte_tar_gz_bomb())
    assert archive.stat().st_size < 2 * MIB
    with tarfile.open(archive, "r:gz") as tar:  # a real tar.gz: its member says 1 GiB
        assert tar.next().size == GIB
    started = time.monotonic()
    with pytest.raises(UnsafeArchive) as caught:
        unpack(archive, tmp_path / "out" / "target")  # the default limits
    assert time.monotonic() - started < 5  # refused from the header: the gigabyte is never inflated
    assert "over 200 times its own size" in caught.value.message and "'bomb.bin'" in caught.value.message
    assert leftovers(tmp_path / "out") == []


def test_a_zip_bomb_of_zeros_is_refused_by_its_ratio(tmp_path):
    archive = write(tmp_path, "zeros.zip", zip_bytes({"zeros.bin": b"\0" * (64 * MIB)}, level=1))
    with pytest.raises(UnsafeArchive) as caught:
        unpack(archive, tmp_path / "out" / "target")
    assert "times its own size" in caught.value.message
    assert leftovers(tmp_path / "out") == []


def test_a_gz_bomb_of_zeros_is_refused_before_writing(tmp_path):
    archive = write(tmp_path, "zeros.bin.gz", gzip.compress(b"\0" * (32 * MIB), compresslevel=9))
    with pytest.raises(UnsafeArchive):
        unpack(archive, tmp_path / "out" / "target")
    assert leftovers(tmp_path / "out") == []


# -- installing a package ------------------------------------------------------------------------------


@pytest.fixture
def repo(ctx, tmp_path) -> PackageRepo:
    return PackageRepo(ctx, tmp_path / "archive-repo")


def archive_source(url: str, data: bytes, filename: str) -> dict:
    return {"kind": "download", "urls": [url], "filename": filename, "sha256": hashlib.sha256(data).hexdigest(),
            "unpack": True}


def test_a_package_archive_over_the_limits_of_settings_json_is_not_installed(ctx, repo, http_server, ckx_home):
    write_limits(ckx_home, archive_max_bytes=100_000)
    data = tar_gz({"model/weights.bin": incompressible(150_000)})
    url = http_server.put("files/model.tar.gz", data)
    repo.add("bigmodel", source=archive_source(url, data, "model.tar.gz"))
    with pytest.raises(UnsafeArchive) as caught:
        install(ctx, alias="bigmodel")
    assert "expands to more than 100000 bytes" in caught.value.message
    assert_nothing_installed(ckx_home)
    assert cached_downloads(ckx_home) == []  # an unsafe archive is never offered from the cache again


def test_the_bomb_through_the_cli_exits_5_with_nothing_installed(ctx, repo, http_server, ckx_home):
    data = gigabyte_tar_gz_bomb()
    url = http_server.put("files/bomb.tar.gz", data)
    repo.add("bomb", source=archive_source(url, data, "bomb.tar.gz"))
    env = {**os.environ, "CKX_HOME": str(ckx_home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "ckx", "install", "package:bomb", "--json"], capture_output=True,
                          text=True, env=env, stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode == 5, (proc.stdout, proc.stderr)
    document = json.loads(proc.stdout)
    assert document["error_type"] == "UnsafeArchive" and "times its own size" in document["error"]
    assert_nothing_installed(ckx_home)


def test_a_bad_limit_in_settings_json_is_an_error_naming_it(ctx, repo, http_server, ckx_home):
    data = tar_gz({"a.txt": b"a"})
    url = http_server.put("files/a.tar.gz", data)
    repo.add("small", source=archive_source(url, data, "a.tar.gz"))
    (ckx_home / "settings.json").write_text(json.dumps({"limits": {"archive_max_ratio": "lots"}}))
    fresh = Context(Home(ckx_home), quiet=True, interactive=False)  # the next command, as a user runs it
    try:
        with pytest.raises(MetaError) as caught:
            install(fresh, alias="small")
    finally:
        fresh.close()
    assert "archive_max_ratio" in str(caught.value) and "settings.json" in str(caught.value)
    assert_nothing_installed(ckx_home)
