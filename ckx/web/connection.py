"""HTTP plumbing with bounds: a fixed pool of request threads, read deadlines, size caps, and JSON for every error."""
from __future__ import annotations

import concurrent.futures
import io
import json
import logging
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from ckx.core.limits import DEFAULT_LIMITS, Limits

log = logging.getLogger(__name__)

LINGER_S = 1.0  # how long a refused request's unread body is drained, so the client reads the answer
LINGER_BYTES = 1 << 20


class DeadlineReader(io.RawIOBase):
    """The socket as a raw stream whose reads fail with TimeoutError once a deadline has passed.

    A socket timeout alone bounds each recv, so a client sending one byte every few seconds could hold
    a thread for ever; the deadline bounds the whole request instead.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.deadline: float | None = None
        self.expired = False

    def begin(self, seconds: float) -> None:
        """Every read from now on must be done within ``seconds``."""
        self.deadline = time.monotonic() + seconds
        self.expired = False

    def end(self, timeout: float) -> None:
        """No deadline any more; each socket operation (the answer's writes) may take ``timeout`` seconds."""
        self.deadline = None
        self.sock.settimeout(timeout)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self.expired = True
                raise TimeoutError("the request did not arrive in time")
            self.sock.settimeout(remaining)
        try:
            return self.sock.recv_into(buffer)
        except TimeoutError:
            self.expired = self.deadline is not None
            raise


class BoundedHTTPServer(HTTPServer):
    """An HTTP server whose connections are served by at most ``limits.server_workers`` threads.

    When every thread is busy the accept loop waits, so further connections wait in the listen
    backlog (``request_queue_size``) instead of each getting a thread: 300 stalled clients cost 300
    sockets in the kernel, not 300 threads.
    """

    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog: bursts of clients must not wait for SYN retries

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *,
                 limits: Limits = DEFAULT_LIMITS, workers: int | None = None) -> None:
        self.limits = limits
        self.workers = workers or limits.server_workers
        self._slots = threading.BoundedSemaphore(self.workers)
        self._closing = False
        self._active: set[socket.socket] = set()  # the connections being served, cut short by server_close
        self._active_lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ckx-http")
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        try:
            super().__init__(address, handler)
        except BaseException:
            self._pool.shutdown(wait=False)
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        """Hand the connection to a free worker thread, waiting for one (the accept loop waits too)."""
        while not self._slots.acquire(timeout=0.2):
            if self._closing:
                self.shutdown_request(request)
                return
        try:
            self._pool.submit(self._serve, request, client_address)
        except RuntimeError:  # the pool was shut down while we waited
            self._slots.release()
            self.shutdown_request(request)

    def _serve(self, request: Any, client_address: Any) -> None:
        with self._active_lock:
            self._active.add(request)
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            with self._active_lock:
                self._active.discard(request)
            self.shutdown_request(request)
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up or stalls is routine; anything else is logged with its traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            log.debug("connection from %s ended: %s", client_address, error)
            return
        log.exception("error while serving %s", client_address)

    def shutdown(self) -> None:
        self._closing = True
        super().shutdown()

    def server_close(self) -> None:
        """Stop listening and end the connections still open, so no worker waits out a slow client."""
        self._closing = True
        super().server_close()
        with self._active_lock:
            active = list(self._active)
        for sock in active:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # a worker blocked reading it wakes at once
            except OSError:
                pass
        self._pool.shutdown(wait=False, cancel_futures=True)


class JsonHandler(BaseHTTPRequestHandler):
    """A request handler whose every answer, errors included, is a JSON object, under the server's limits.

    Caps (from the server's Limits): the request line (414), the number and total size of header lines
    (431), the time a request may take to arrive (``request_timeout_s``, then 408 and the connection
    closes) and the time a kept-alive connection may wait for its next request (``request_idle_s``).
    """

    protocol_version = "HTTP/1.1"
    # The version assumed until the request line names one: an answer to a garbled request line gets
    # a status line and headers (HTTP/0.9's bare body would carry no status at all).
    default_request_version = "HTTP/1.0"
    server: BoundedHTTPServer
    # Headers and body leave in one segment, at once: no Nagle / delayed-ACK stall on keep-alive connections.
    wbufsize = -1
    disable_nagle_algorithm = True

    def setup(self) -> None:
        self.timeout = self.server.limits.request_timeout_s
        super().setup()
        self.rfile.close()  # replaced by a reader with deadlines; closing drops the socket's extra reference
        self.reader = DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self.reader, io.DEFAULT_BUFFER_SIZE)
        self.answered = False
        self.linger = False

    def finish(self) -> None:
        super().finish()
        if self.linger:
            _drain(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- one request -------------------------------------------------------------------------------
    def handle_one_request(self) -> None:
        limits = self.server.limits
        self.answered = False
        self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
        self.reader.begin(limits.request_idle_s)
        try:
            if not self.rfile.peek(1):
                self.close_connection = True
                return
        except (TimeoutError, ConnectionError):
            self.close_connection = True  # an idle kept-alive connection: close it quietly
            return
        self.reader.begin(limits.request_timeout_s)
        super().handle_one_request()
        if self.reader.expired and not self.answered:
            self.reader.end(1.0)
            self.request_timed_out()

    def request_timed_out(self) -> None:
        """408: the request (line, headers or body) did not arrive within ``request_timeout_s``."""
        self.close_connection = True
        try:
            self.send_json(408, {"return": 2, "error_type": "WebError",
                                 "error": f"the request did not arrive within {self.server.limits.request_timeout_s:g} s"})
            self.wfile.flush()
        except OSError:
            pass

    def parse_request(self) -> bool:
        limits = self.server.limits
        if len(self.raw_requestline) > limits.request_max_url_bytes + 32:
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return False
        if not super().parse_request():
            return False
        if len(self.path) > limits.request_max_url_bytes:
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return False
        size = sum(len(key) + len(value) + 4 for key, value in self.headers.items())
        if len(self.headers) > limits.request_max_headers or size > limits.request_max_header_bytes:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Every error the HTTP layer itself raises (400, 408, 414, 431, 501, 505, ...) as a JSON body."""
        limits = self.server.limits
        status = HTTPStatus(code)
        texts = {
            414: f"the URL is longer than {limits.request_max_url_bytes} bytes",
            431: (f"the request headers are too large: at most {limits.request_max_headers} header lines "
                  f"of {limits.request_max_header_bytes} bytes in all"),
        }
        error = texts.get(code) or message or status.phrase
        self.close_connection = True
        self.linger = True
        self.send_json(code, {"return": 1 if code >= 500 else 2, "error": error, "error_type": "WebError",
                              **({"hint": explain} if explain else {})})

    def send_json(self, status: int, data: dict, headers: dict[str, str] | None = None) -> None:
        """Answer ``data`` as JSON with ``status``; ``Connection: close`` when this connection ends."""
        body = json.dumps(data, sort_keys=True, default=str).encode("utf-8")
        self.answered = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _drain(sock: socket.socket) -> None:
    """After the answer to a refused request: stop sending, read (and drop) what the client still sends.

    Closing a socket with unread input makes the kernel reset the connection, and the reset can
    destroy the answer before the client reads it; so read up to LINGER_BYTES for LINGER_S first.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER_S
        received = 0
        while received < LINGER_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                return
            received += len(chunk)
    except OSError:
        return


__all__ = ["BoundedHTTPServer", "DeadlineReader", "JsonHandler", "LINGER_BYTES", "LINGER_S"]
