"""Downloads are bounded: an endless body, a body over the meta's size and an announced size over the cap."""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from ckx.core.errors import DownloadError
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
