"""Slow and stalled clients cost `ckx serve` a bounded number of threads and a bounded time each."""
from __future__ import annotations

import json
import selectors
import socket
import threading
import time

from webclient import Client, start_server  # noqa: F401  (start_server is a fixture)
from ckx.core.limits import Limits

WORKERS = 4


def _head(server, length: int = 1000) -> bytes:
    return (f"POST /api HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {server.token}\r\nContent-Length: {length}\r\n\r\n").encode()


def _open_half_open_posts(server, count: int) -> list[socket.socket]:
    """``count`` connections, each sending a POST's headers and the first byte of a 1000-byte body."""
    port = server.server_address[1]
    selector = selectors.DefaultSelector()
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        selector.register(sock, selectors.EVENT_WRITE)
        sockets.append(sock)
    deadline = time.monotonic() + 5
    pending = set(sockets)
    while pending and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.2):
            sock = key.fileobj
            selector.unregister(sock)
            pending.discard(sock)
            try:
                sock.send(_head(server) + b"{")
            except OSError:
                pass
    selector.close()
    return sockets


def _read_answer(sock: socket.socket, timeout: float) -> tuple[int, dict]:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_300_half_open_posts_do_not_make_300_threads(start_server):
    limits = Limits().replaced({"request_timeout_s": 30})
    server = start_server(limits=limits, workers=WORKERS)
    assert Client.of(server).get("/api?action=version")[0] == 200
    before = threading.active_count()
    attackers = _open_half_open_posts(server, 300)
    try:
        peak = before
        for _ in range(20):
            peak = max(peak, threading.active_count())
            time.sleep(0.05)
        assert peak <= before + WORKERS, (before, peak)
        names = [t.name for t in threading.enumerate() if t.name.startswith("ckx-http")]
        assert len(names) <= WORKERS
    finally:
        for sock in attackers:
            sock.close()
    # once they hang up, the same workers serve an honest client at once
    started = time.monotonic()
    status, data = Client.of(server).get("/api?action=version")
    assert status == 200 and data["version"] and time.monotonic() - started < 10


def test_a_stalled_body_is_cut_at_the_request_deadline_with_408_json(start_server):
    server = start_server(limits=Limits().replaced({"request_timeout_s": 1.0}), workers=WORKERS)
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(_head(server) + b'{"action": ')
        status, data = _read_answer(sock, timeout=10)
        elapsed = time.monotonic() - started
        assert status == 408 and data["return"] == 2 and "1 s" in data["error"], data
        assert 0.9 <= elapsed < 5, elapsed
        assert sock.recv(100) == b""  # and the connection is closed


def test_a_header_dribble_is_cut_at_the_deadline_although_each_byte_is_on_time(start_server):
    server = start_server(limits=Limits().replaced({"request_timeout_s": 1.0}), workers=WORKERS)
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /api?action=version HTTP/1.1\r\n")
        answer = b""
        try:
            for _ in range(100):  # one byte every 0.1 s: far inside any per-read timeout
                sock.sendall(b"X")
                time.sleep(0.1)
        except OSError:
            pass  # the server hung up
        sock.settimeout(5)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
        elapsed = time.monotonic() - started
    assert elapsed < 6, elapsed
    assert answer.startswith(b"HTTP/1.1 408") and b'"error"' in answer, answer


def test_an_idle_kept_alive_connection_is_closed(start_server):
    server = start_server(limits=Limits().replaced({"request_idle_s": 0.5}), workers=WORKERS)
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(f"GET /api?action=version HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Authorization: Bearer {server.token}\r\n\r\n".encode())
        status, data = _read_answer(sock, timeout=10)
        assert status == 200
        started = time.monotonic()
        sock.settimeout(5)
        assert sock.recv(100) == b""
        assert time.monotonic() - started < 3


def test_closing_the_server_ends_the_connections_of_stalled_clients(start_server):
    server = start_server(limits=Limits().replaced({"request_timeout_s": 60}), workers=WORKERS)
    attackers = _open_half_open_posts(server, WORKERS)
    try:
        deadline = time.monotonic() + 10
        while sum(t.name.startswith("ckx-http") for t in threading.enumerate()) < WORKERS:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.shutdown()
        started = time.monotonic()
        server.server_close()
        for sock in attackers:
            sock.setblocking(True)
            sock.settimeout(10)
            try:
                while sock.recv(65536):
                    pass
            except ConnectionResetError:
                pass
        assert time.monotonic() - started < 5  # not the 60 s the requests were allowed
    finally:
        for sock in attackers:
            sock.close()
