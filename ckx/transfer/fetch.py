"""Downloads: mirrors in order, HTTP Range resume, bounded retries, checksum-verified, cached.

How a download goes
    ``fetch(urls, dest, checker=...)`` writes ``dest + ".part"`` and resumes it with
    ``Range: bytes=N-`` when it already exists. Only a file that verifies is moved onto ``dest``
    (``os.replace``); an existing ``dest`` that verifies is returned without touching the network.
    404/410 and unreachable hosts go straight to the next mirror; 5xx answers, resets, read
    timeouts and connections cut mid-body are retried with exponential backoff (a cut body
    resumes from the ``.part``). When every URL fails, DownloadError lists each attempt.

URL mapping (tests, air-gapped mirrors)
    Each URL's longest matching prefix is rewritten before it is fetched, so the real URLs in
    package meta can be served by a local mirror without editing any meta:

    * ``CKX_URL_MAP`` (environment): ``PREFIX=REPLACEMENT`` pairs separated by ``;`` or newlines,
      e.g. ``CKX_URL_MAP="https://zenodo.org=http://127.0.0.1:8123/zenodo;https://example.org=http://mirror/ex"``.
      A JSON object ``{"PREFIX": "REPLACEMENT"}`` is accepted as well.
    * ``$CKX_HOME/settings.json``, key ``"url_map"``: a JSON object PREFIX -> REPLACEMENT.

    ``load_url_map(home)`` merges both (the environment wins on equal prefixes); ``fetch`` uses
    its ``url_map`` argument, or ``CKX_URL_MAP`` alone when none is given. A prefix matches only at
    a boundary: ``https://zenodo.org`` maps ``https://zenodo.org/record/1`` but not
    ``https://zenodo.org.example.com/``.

Offline
    ``CKX_OFFLINE=1`` (or ``offline=True``) never touches the network: ``fetch`` returns a cached
    file that verifies and otherwise raises DownloadError at once, with the hint.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping
from urllib.parse import unquote, urlsplit

from ckx import __version__
from ckx.core.errors import ChecksumMismatch, CkxError, DownloadError, MetaError, NotFound, UsageError
from ckx.core.limits import DEFAULT_LIMITS
from ckx.core.report import Reporter
from ckx.transfer.checksum import CHUNK_SIZE, Checker, new_hash

if TYPE_CHECKING:  # requests is imported lazily: `import ckx.transfer.fetch` must stay cheap
    import requests

    from ckx.core.home import Home

log = logging.getLogger(__name__)

URL_MAP_ENV = "CKX_URL_MAP"
OFFLINE_ENV = "CKX_OFFLINE"
PART_SUFFIX = ".part"
LOCK_SUFFIX = ".lock"
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 60.0)  # (connect, read) seconds
MAX_BACKOFF = 30.0
LOCAL_PATH_HINT = (
    "download the file by other means and run again with --local_path=FILE "
    "(its checksum is still verified)"
)
_TRUE = {"1", "true", "yes", "on"}
_RETRY_STATUSES = {408, 425, 429}


class _Unavailable(Exception):
    """This URL cannot serve the file now: go on to the next mirror."""


class _Transient(Exception):
    """A failure worth retrying on the same URL (5xx, reset, timeout, cut body)."""


# --------------------------------------------------------------------------- URL mapping


def parse_url_map(text: str, *, source: str = URL_MAP_ENV) -> dict[str, str]:
    """Parse ``PREFIX=REPLACEMENT;PREFIX=REPLACEMENT`` (or a JSON object) into a dict.

    Raises UsageError naming ``source`` when an item has no ``=`` or an empty prefix.
    """
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{source} is not valid JSON: {exc}") from exc
        return _checked_map(loaded, source)
    mapping: dict[str, str] = {}
    for item in text.replace("\n", ";").split(";"):
        item = item.strip()
        if not item:
            continue
        prefix, sep, replacement = item.partition("=")
        if not sep or not prefix.strip():
            raise UsageError(
                f"{source}: {item!r} is not PREFIX=REPLACEMENT",
                hint=f'example: {URL_MAP_ENV}="https://zenodo.org=http://127.0.0.1:8123/zenodo"',
            )
        mapping[prefix.strip()] = replacement.strip()
    return mapping


def _checked_map(value: object, source: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in value.items()
    ):
        raise MetaError(f"{source}: url_map must be an object of prefix -> replacement strings")
    return dict(value)


def url_map_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The mapping in ``$CKX_URL_MAP`` (empty when unset)."""
    env = os.environ if environ is None else environ
    return parse_url_map(env.get(URL_MAP_ENV, ""))


def load_url_map(home: "Home", environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The URL map of a home: settings.json's ``"url_map"`` overlaid by ``$CKX_URL_MAP``.

    Raises MetaError naming settings.json when it is unreadable or the key has the wrong shape.
    """
    mapping: dict[str, str] = {}
    path = home.settings_path
    if path.is_file():
        try:
            settings = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise MetaError(f"cannot read {path}: {exc}") from exc
        if isinstance(settings, dict) and "url_map" in settings:
            mapping.update(_checked_map(settings["url_map"], f"{path} (key 'url_map')"))
    mapping.update(url_map_from_env(environ))
    return mapping


def map_url(url: str, mapping: Mapping[str, str] | None) -> str:
    """Rewrite the longest prefix of ``url`` found in ``mapping``; unchanged when none matches.

    A prefix matches when the URL equals it, or it ends with ``/``, or the URL continues
    with ``/``, ``?`` or ``#`` right after it.
    """
    best = ""
    for prefix in mapping or {}:
        if len(prefix) > len(best) and _prefix_matches(url, prefix):
            best = prefix
    if not best:
        return url
    return mapping[best] + url[len(best):]  # type: ignore[index]


def _prefix_matches(url: str, prefix: str) -> bool:
    if not url.startswith(prefix):
        return False
    if len(url) == len(prefix) or prefix.endswith("/"):
        return True
    return url[len(prefix)] in "/?#"


# --------------------------------------------------------------------------- cache paths


def url_key(url: str) -> str:
    """A short stable key for a URL: the cache directory of a download that has no checksum."""
    return "url-" + hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


def filename_from_url(url: str) -> str:
    """The last path segment of ``url`` (unquoted, query dropped), e.g. ``resnet50_v1.onnx``."""
    name = unquote(urlsplit(url).path.rstrip("/").rpartition("/")[2])
    return check_filename(name or "download")


def check_filename(name: str) -> str:
    """Return ``name`` when it is a plain file name; raise MetaError for paths, ``..``, NUL."""
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise MetaError(f"{name!r} is not a plain file name")
    return name


def cached_download_path(home: "Home", filename: str, digest: str) -> Path:
    """Where a download lives in the cache: ``<home>/cache/downloads/<digest>/<filename>``.

    ``digest`` is the expected checksum (``checker.expected``) or, for a file without one,
    ``url_key(url)``; so two packages that ship files of the same name never collide.
    """
    key = digest.strip().lower()
    if not key or any(not (c.isalnum() or c in "-_.") for c in key) or key in (".", ".."):
        raise MetaError(f"{digest!r} cannot name a cache directory")
    return home.downloads / key / check_filename(filename)


# --------------------------------------------------------------------------- fetch


def offline_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``$CKX_OFFLINE`` is set to 1/true/yes/on."""
    env = os.environ if environ is None else environ
    return env.get(OFFLINE_ENV, "").strip().lower() in _TRUE


def download_hint(extra_hint: str | None = None) -> str:
    """The ways forward when a download is impossible: --local_path, and the caller's own."""
    return f"{LOCAL_PATH_HINT}; {extra_hint}" if extra_hint else LOCAL_PATH_HINT


def fetch(
    urls: str | Iterable[str],
    dest: str | os.PathLike[str],
    *,
    checker: Checker | None = None,
    reporter: Reporter | None = None,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    retries: int = 3,
    backoff: float = 0.5,
    session: "requests.Session | None" = None,
    offline: bool = False,
    url_map: Mapping[str, str] | None = None,
    extra_hint: str | None = None,
    max_bytes: int | None = None,
    expected_size: int | None = None,
) -> Path:
    """Download the first of ``urls`` that works into the file ``dest`` and return ``dest``.

    ``checker`` verifies the result (a mismatching file is deleted, never moved into place).
    ``retries`` bounds the retries per URL (5xx, resets, timeouts, cut bodies), waiting
    ``backoff * 2**n`` seconds (at most 30) between them. ``timeout`` is seconds, or
    (connect, read). ``url_map`` rewrites URL prefixes (default: ``$CKX_URL_MAP``).
    ``extra_hint`` is added to the error hint (e.g. how to use an embedded default).
    A body is never stored past ``expected_size`` (the size a meta states), ``max_bytes`` (default: the
    ``download_max_bytes`` limit) or the server's own Content-Length: a server that sends more is a
    failed attempt, and its bytes are deleted.

    Raises DownloadError (every attempt listed) when no URL served the file or when offline,
    ChecksumMismatch when the file served does not verify, CkxError when ``dest`` is unwritable.
    """
    dest = Path(dest)
    url_list = [urls] if isinstance(urls, str) else list(urls)
    reporter = reporter or Reporter()
    if _cache_hit(dest, checker, reporter):
        log.debug("cache hit: %s", dest)
        return dest
    hint = download_hint(extra_hint)
    if offline or offline_from_env():
        raise DownloadError(
            f"offline mode ({OFFLINE_ENV}): not downloading {dest.name}",
            [f"{url} -> not tried (offline)" for url in url_list],
            hint=hint,
        )
    if not url_list:
        raise DownloadError(f"no URL to download {dest.name} from", hint=hint)
    mapping = url_map_from_env() if url_map is None else dict(url_map)

    import filelock  # lazily: only a download takes the lock; importing fetch stays cheap

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # The lock file stays beside dest: removing it is racy, and it is empty.
        lock = filelock.FileLock(str(dest) + LOCK_SUFFIX)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            reporter.info(f"waiting for another process downloading {dest.name}")
            lock.acquire()
        try:
            # Another process may have completed the same download while this one waited.
            if _cache_hit(dest, checker, reporter):
                return dest
            cap = DEFAULT_LIMITS.download_max_bytes if max_bytes is None else max_bytes
            if expected_size is not None:
                cap = min(cap, expected_size)
            download = _Download(dest, checker, reporter, timeout, retries, backoff, hint, cap)
            return download.run(url_list, mapping, session)
        finally:
            lock.release()
    except OSError as exc:
        raise CkxError(f"cannot write {dest}: {exc}") from exc


def _cache_hit(dest: Path, checker: Checker | None, reporter: Reporter) -> bool:
    """True when ``dest`` is already complete; a corrupt one is discarded (and False returned)."""
    if not dest.is_file():
        return False
    if checker is None or checker.matches(dest):
        return True
    reporter.warning(f"{dest} does not match its {checker.algorithm} digest; downloading it again")
    dest.unlink(missing_ok=True)
    return False


class _Download:
    """One download of one file over a list of mirrors (state shared by the steps)."""

    def __init__(
        self,
        dest: Path,
        checker: Checker | None,
        reporter: Reporter,
        timeout: float | tuple[float, float],
        retries: int,
        backoff: float,
        hint: str,
        max_bytes: int,
    ) -> None:
        self.dest = dest
        self.max_bytes = max_bytes
        self.part = dest.with_name(dest.name + PART_SUFFIX)
        self.checker = checker
        self.reporter = reporter
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = max(0.0, backoff)
        self.hint = hint
        self.attempts: list[str] = []

    def run(self, url_list: list[str], mapping: Mapping[str, str], session: "requests.Session | None") -> Path:
        own_session = session is None
        if session is None:
            import requests  # lazily: requests costs start-up time

            session = requests.Session()
            session.headers["User-Agent"] = f"ckx/{__version__}"
        mismatch: ChecksumMismatch | None = None
        try:
            for original in url_list:
                url = map_url(original, mapping)
                label = url if url == original else f"{url} (for {original})"
                try:
                    actual = self._from_url(session, url, label)
                except _Unavailable:
                    continue
                if actual is None:
                    return self.dest
                assert self.checker is not None
                mismatch = ChecksumMismatch(str(self.dest), self.checker.algorithm, self.checker.expected, actual)
        finally:
            if own_session:
                session.close()
        if mismatch is not None:
            if len(self.attempts) > 1:
                listing = "; ".join(self.attempts)
                mismatch.hint = f"no mirror served the expected file ({listing}); nothing was installed"
            raise mismatch
        raise DownloadError(f"could not download {self.dest.name}", self.attempts, hint=self.hint)

    def _from_url(self, session: "requests.Session", url: str, label: str) -> str | None:
        """Download from one URL and verify: None when ``dest`` is in place, else the wrong digest.

        Raises _Unavailable when the URL gave up (its attempts are recorded).
        """
        resumed = self._with_retries(session, url, label)
        actual = self._verify()
        if actual is not None and resumed:
            # The bytes kept in the .part may come from an older or different file: once more from zero.
            self.attempts.append(f"{label} -> resumed file does not verify (got {actual}); restarting from zero")
            self.reporter.warning(f"{self.dest.name}: resumed download does not verify; downloading it again")
            self._with_retries(session, url, label)
            actual = self._verify()
        if actual is not None:
            self.attempts.append(f"{label} -> {self.checker.algorithm} mismatch: got {actual}")  # type: ignore[union-attr]
            self.reporter.warning(f"{label}: checksum mismatch (got {actual})")
        return actual

    def _verify(self) -> str | None:
        """Move a verified .part onto dest and return None; delete a wrong one and return its digest."""
        if self.checker is not None:
            actual = self.checker.digest(self.part)
            if actual != self.checker.expected:
                self.part.unlink(missing_ok=True)
                return actual
        os.replace(self.part, self.dest)
        return None

    def _with_retries(self, session: "requests.Session", url: str, label: str) -> bool:
        """Download ``url`` into the .part, retrying transient failures; True if it appended to one."""
        failures = 0
        resumed = False
        while True:
            try:
                resumed = self._once(session, url) or resumed
                return resumed
            except _Unavailable as exc:
                self.attempts.append(f"{label} -> {exc}")
                self.reporter.warning(f"{label}: {exc}")
                raise
            except _Transient as exc:
                self.attempts.append(f"{label} -> {exc}")
                failures += 1
                if failures > self.retries:
                    self.reporter.warning(f"{label}: {exc}; giving up after {failures} attempts")
                    raise _Unavailable(str(exc)) from exc
                delay = min(self.backoff * 2 ** (failures - 1), MAX_BACKOFF)
                self.reporter.warning(f"{label}: {exc}; retry {failures}/{self.retries} in {delay:.1f} s")
                time.sleep(delay)

    def _once(self, session: "requests.Session", url: str) -> bool:
        """One HTTP request; returns True when it completed an existing .part (206 or 416)."""
        import requests  # lazily: requests costs start-up time

        offset = self.part.stat().st_size if self.part.exists() else 0
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            response = session.get(url, headers=headers, stream=True, timeout=self.timeout)
        except requests.RequestException as exc:
            raise _classify(exc) from exc
        with response:
            status = response.status_code
            if status == 416 and offset:
                return self._range_not_satisfiable(response, offset)
            if status >= 500 or status in _RETRY_STATUSES:
                raise _Transient(f"HTTP {status} {response.reason or ''}".rstrip())
            if status not in (200, 206):
                raise _Unavailable(f"HTTP {status} {response.reason or ''}".rstrip())
            append = False
            total: int | None = None
            if status == 206:
                start, total = _parse_content_range(response.headers.get("Content-Range"))
                if start != offset and start != 0:
                    self.part.unlink(missing_ok=True)
                    raise _Transient(f"server sent bytes from {start} for a request from {offset}; restarting")
                append = start == offset and offset > 0
            elif offset:
                log.info("%s ignored the Range request; downloading %s from zero", url, self.dest.name)
            start_at = offset if append else 0
            length = _content_length(response)
            if total is None and length is not None:
                total = start_at + length
            limit = self.max_bytes if length is None else min(self.max_bytes, start_at + length)
            if start_at + (length or 0) > self.max_bytes:
                self.part.unlink(missing_ok=True)
                raise _Unavailable(f"announces {start_at + (length or 0)} bytes, over the {self.max_bytes}-byte limit")
            received = self._stream(response, append, start_at, total, limit)
            if length is not None and received < length:
                raise _Transient(f"connection closed after {start_at + received} of {start_at + length} bytes")
            return append

    def _range_not_satisfiable(self, response: "requests.Response", offset: int) -> bool:
        """416: the .part is complete (verification decides) or longer than the file (restart)."""
        _, total = _parse_content_range(response.headers.get("Content-Range"))
        if total is None or total == offset:
            return True
        self.part.unlink(missing_ok=True)
        raise _Transient(f"HTTP 416: partial file of {offset} bytes is longer than the {total} served; restarting")

    def _stream(self, response: "requests.Response", append: bool, start_at: int, total: int | None,
                limit: int) -> int:
        """Write the body into the .part (appending when resuming); return the bytes received.

        A body that runs past ``limit`` bytes (counting what the .part held) is cut off, the .part
        deleted and the attempt failed: an endless or lying server cannot fill the disk.
        """
        import requests  # lazily: requests costs start-up time
        import urllib3  # lazily, with requests

        received = 0
        chunks = _raw_chunks(response.raw)
        with self.reporter.progress(self.dest.name, total) as bar, open(self.part, "ab" if append else "wb") as out:
            if start_at:
                bar.update(start_at)
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
                    raise _Transient(f"connection lost after {start_at + received} bytes: {_reason(exc)}") from exc
                if start_at + received + len(chunk) > limit:
                    out.close()
                    self.part.unlink(missing_ok=True)
                    raise _Unavailable(f"sent more than {limit} bytes (the size limit of this download); "
                                       "nothing was kept")
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        return received


def _raw_chunks(raw: object) -> Iterator[bytes]:
    """The body as it arrives, undecoded (a .tar.gz stays gzip), so a timeout loses almost nothing."""
    read1 = getattr(raw, "read1", None)
    if read1 is None:  # urllib3 < 2.1
        yield from raw.stream(64 * 1024, decode_content=False)  # type: ignore[attr-defined]
        return
    while chunk := read1(CHUNK_SIZE, decode_content=False):
        yield chunk


def _classify(exc: Exception) -> Exception:
    """Map a requests error to _Unavailable (next mirror) or _Transient (retry this one)."""
    import requests  # lazily: requests costs start-up time

    reason = _reason(exc)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return _Unavailable(f"connect timeout: {reason}")
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return _Transient(f"read timeout: {reason}")
    if isinstance(exc, requests.exceptions.SSLError):
        return _Unavailable(f"TLS error: {reason}")
    if isinstance(exc, requests.exceptions.ConnectionError):
        if _unreachable(exc):
            return _Unavailable(f"cannot connect: {reason}")
        return _Transient(f"connection reset: {reason}")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return _Transient(f"connection broken: {reason}")
    return _Unavailable(reason)


def _causes(exc: BaseException) -> Iterable[BaseException]:
    """``exc`` and every exception it wraps (args, ``reason``, cause, context), once each."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [*current.args, getattr(current, "reason", None), current.__cause__, current.__context__]
        stack.extend(item for item in linked if isinstance(item, BaseException))


def _unreachable(exc: BaseException) -> bool:
    """True when the host refused the connection or its name does not resolve."""
    import urllib3  # lazily, with requests

    refused = (urllib3.exceptions.NewConnectionError, socket.gaierror, ConnectionRefusedError)
    return any(isinstance(e, refused) for e in _causes(exc))


def _reason(exc: BaseException) -> str:
    """A short reason: the innermost OS error text when there is one, else the exception's."""
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    first = exc.args[0] if exc.args else None
    text = first if isinstance(first, str) and first else (str(exc) or type(exc).__name__)
    return text if len(text) <= 200 else text[:197] + "..."


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/200`` -> (100, 200); ``bytes */200`` -> (None, 200); unknown parts None."""
    if not value:
        return None, None
    unit, _, rest = value.strip().partition(" ")
    if unit.lower() != "bytes":
        return None, None
    span, _, size = rest.partition("/")
    start: int | None = None
    total: int | None = None
    first = span.partition("-")[0].strip()
    if first.isdigit():
        start = int(first)
    if size.strip().isdigit():
        total = int(size.strip())
    return start, total


def _content_length(response: "requests.Response") -> int | None:
    value = response.headers.get("Content-Length", "")
    return int(value) if value.strip().isdigit() else None


# --------------------------------------------------------------------------- --local_path


def local_copy(
    path: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    checker: Checker | None = None,
) -> Path:
    """Put a file already on disk (``--local_path``) into the downloads cache at ``dest``.

    The file is hard-linked when possible, else copied; it is verified with ``checker`` and
    only then moved onto ``dest`` (atomically). Raises NotFound when ``path`` is not a file
    and ChecksumMismatch (naming ``path``; nothing is left at ``dest``) when it does not verify.
    """
    source = Path(path).expanduser()
    dest = Path(dest)
    if not source.is_file():
        raise NotFound(f"local file {source} does not exist", hint="check the --local_path value")
    if dest.exists() and os.path.samefile(source, dest):
        if checker is not None:
            checker.check(dest)
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.tmp")
        try:
            actual = _link_or_copy(source, tmp, checker.algorithm if checker else None)
            if checker is not None:
                checker.verify_digest(actual or checker.digest(tmp), str(source))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise CkxError(f"cannot copy {source} to {dest}: {exc}") from exc
    return dest


def _link_or_copy(source: Path, tmp: Path, algorithm: str | None) -> str | None:
    """Hard-link ``source`` to ``tmp`` (returns None) or copy it, hashing on the way (returns the digest)."""
    try:
        os.link(source, tmp)
        return None
    except OSError:
        pass  # other file system, or links not permitted: copy instead
    hasher = new_hash(algorithm) if algorithm else None
    with open(source, "rb") as src, open(tmp, "wb") as out:
        while chunk := src.read(CHUNK_SIZE):
            if hasher is not None:
                hasher.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return hasher.hexdigest() if hasher is not None else None
