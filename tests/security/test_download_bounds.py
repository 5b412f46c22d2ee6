"""Downloads are bounded: an endless body, a body over the meta's size and an announced size over the cap, in fetch and in install."""
from __future__ import annotations

import hashlib
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from pkgrepo import PackageRepo, assert_nothing_installed, cached_downloads, write_limits

from ckx.core.errors import DownloadError, MetaError
from ckx.software.resolve import install
from ckx.transfer.fetch import fetch

MIB = 1024 * 1024


@contextmanager
def endless_server(*, announce: int | None = None, send_limit: int = 256 * MIB) -> Iterator[str]:
    """A loopback server whose every answer streams zeros until the client hangs up (at most ``send_limit``)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.2)
    stop = threading.Event()
    sent: list[int] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            with conn:
                conn.recv(65536)
                head = "HTTP/1.1 200 OK\r\nConnection: close\r\n"
                if announce is not None:
                    head += f"Content-Length: {announce}\r\n"
                conn.sendall((head + "\r\n").encode())
                total, block = 0, b"\0" * 65536
                try:
                    while total < send_limit and not stop.is_set():
                        conn.sendall(block)
                        total += len(block)
                except OSError:
                    pass
                sent.append(total)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/blob.bin"
    finally:
        stop.set()
        thread.join(10)
        listener.close()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(".lock"))


def test_an_endless_body_stops_at_the_cap_and_leaves_nothing(tmp_path):
    with endless_server() as url:
        started = time.monotonic()
        with pytest.raises(DownloadError) as caught:
            fetch(url, tmp_path / "blob.bin", max_bytes=2 * MIB, retries=0)
        assert time.monotonic() - started < 20
    assert "more than 2097152 bytes" in " ".join(caught.value.attempts)
    assert _leftovers(tmp_path) == []


def test_a_body_longer_than_the_size_the_meta_states_is_refused(tmp_path):
    with endless_server() as url:
        with pytest.raises(DownloadError) as caught:
            fetch(url, tmp_path / "blob.bin", expected_size=100_000, retries=0)
    assert "more than 100000 bytes" in " ".join(caught.value.attempts)
    assert _leftovers(tmp_path) == []


def test_an_announced_length_over_the_cap_is_refused_before_reading(tmp_path):
    with endless_server(announce=64 * MIB) as url:
        with pytest.raises(DownloadError) as caught:
            fetch(url, tmp_path / "blob.bin", max_bytes=MIB, retries=0)
    assert "announces 67108864 bytes" in " ".join(caught.value.attempts)
    assert _leftovers(tmp_path) == []


def test_a_body_within_its_bounds_downloads(tmp_path, http_server):
    url = http_server.put("files/small.bin", b"x" * 5000)
    path = fetch(url, tmp_path / "small.bin", max_bytes=5000, expected_size=5000)
    assert path.read_bytes() == b"x" * 5000


# -- installing a package: the meta's size, else the download_max_bytes limit of settings.json ----------


@pytest.fixture
def repo(ctx, tmp_path) -> PackageRepo:
    return PackageRepo(ctx, tmp_path / "download-repo")


def sized_source(urls: list[str], data: bytes, **extra: object) -> dict:
    return {"kind": "download", "urls": urls, "filename": "weights.bin", "sha256": hashlib.sha256(data).hexdigest(),
            **extra}


def test_a_mirror_serving_more_than_the_meta_states_is_cut_off_and_nothing_installed(ctx, repo, http_server,
                                                                                     ckx_home):
    url = http_server.put("files/weights.bin", b"w" * 5000)
    repo.add("sized", source=sized_source([url], b"w" * 1000, size=1000))
    with pytest.raises(DownloadError) as caught:
        install(ctx, alias="sized")
    assert "announces 5000 bytes, over the 1000-byte limit" in caught.value.message
    assert_nothing_installed(ckx_home)
    assert cached_downloads(ckx_home) == []


def test_a_mirror_streaming_past_the_stated_size_is_cut_off(ctx, repo, ckx_home):
    with endless_server() as url:
        repo.add("endless", source=sized_source([url], b"", size=300_000))
        with pytest.raises(DownloadError) as caught:
            install(ctx, alias="endless")
    assert "sent more than 300000 bytes" in caught.value.message
    assert_nothing_installed(ckx_home)
    assert cached_downloads(ckx_home) == []


def test_the_next_mirror_serves_the_file_of_the_stated_size(ctx, repo, http_server, ckx_home):
    data = b"g" * 1000
    big = http_server.put("big/weights.bin", b"b" * 5000)
    good = http_server.put("good/weights.bin", data)
    repo.add("twomirrors", source=sized_source([big, good], data, size=1000))
    result = install(ctx, alias="twomirrors")
    assert Path(result.env.full_path).read_bytes() == data


def test_without_a_stated_size_the_limit_of_settings_json_cuts_off(ctx, repo, ckx_home):
    write_limits(ckx_home, download_max_bytes=2 * MIB)
    with endless_server() as url:
        repo.add("unsized", source=sized_source([url], b""))
        with pytest.raises(DownloadError) as caught:
            install(ctx, alias="unsized")
    assert "sent more than 2097152 bytes" in caught.value.message
    assert_nothing_installed(ckx_home)


def test_the_size_cut_off_through_the_cli_is_a_json_error(cli_json, repo, http_server, ckx_home):
    url = http_server.put("files/weights.bin", b"w" * 5000)
    repo.add("sizedcli", source=sized_source([url], b"w" * 1000, size=1000))
    code, document = cli_json("install", "package:sizedcli")
    assert code == 1 and document["error_type"] == "DownloadError"
    assert "over the 1000-byte limit" in document["error"]
    assert_nothing_installed(ckx_home)


def test_a_size_that_is_not_a_number_of_bytes_is_a_meta_error(ctx, repo, http_server, ckx_home):
    url = http_server.put("files/weights.bin", b"w" * 10)
    repo.add("badsize", source=sized_source([url], b"w" * 10, size="ten"))
    with pytest.raises(MetaError) as caught:
        install(ctx, alias="badsize")
    assert "size" in caught.value.message
    assert_nothing_installed(ckx_home)
