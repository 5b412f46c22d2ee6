"""Tests for ckx.transfer.fetch and ckx.transfer.checksum against a real loopback HTTP server."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from httpserver import LoopbackServer, http_server, unused_url  # noqa: F401  (fixture)

from ckx.transfer.checksum import ALGORITHMS, Checker, file_digest
from ckx.core.report import Progress, Reporter
from ckx.core.errors import ChecksumMismatch, CkxError, DownloadError, MetaError, NotFound, UsageError
from ckx.transfer.fetch import (
    cached_download_path,
    fetch,
    filename_from_url,
    load_url_map,
    local_copy,
    map_url,
    parse_url_map,
    url_key,
)
from ckx.core.home import Home

DATA = bytes(range(256)) * 800  # 204,800 bytes
SHA256 = hashlib.sha256(DATA).hexdigest()
ZENODO_URL = "https://zenodo.org/record/2592612/files/resnet50_v1.onnx"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CKX_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CKX_URL_MAP", raising=False)
    monkeypatch.delenv("CKX_OFFLINE", raising=False)


@pytest.fixture
def checker() -> Checker:
    return Checker("sha256", SHA256)


@pytest.fixture
def served(http_server: LoopbackServer) -> tuple[LoopbackServer, str]:  # noqa: F811
    return http_server, http_server.put("files/data.bin", DATA)


def part_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


class RecordingReporter(Reporter):
    def __init__(self) -> None:
        super().__init__()
        self.bars: list[tuple[str, int | None, list[int]]] = []

    def progress(self, description: str, total: int | None = None, *, unit: str = "B") -> Progress:
        updates: list[int] = []
        self.bars.append((description, total, updates))

        class Bar(Progress):
            def update(self, amount: int) -> None:
                updates.append(amount)

        return Bar()


# --------------------------------------------------------------------------- checksum


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_file_digest_matches_hashlib(tmp_path: Path, algorithm: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(DATA * 7)  # > 1 MiB: several chunks
    assert file_digest(path, algorithm) == hashlib.new(algorithm, DATA * 7).hexdigest()


def test_checker_check_raises_mismatch_with_both_digests(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"other")
    error = pytest.raises(ChecksumMismatch, Checker("sha256", SHA256).check, path).value
    assert error.exit_code == 5
    assert error.expected == SHA256
    assert error.actual == hashlib.sha256(b"other").hexdigest()
    assert SHA256 in str(error) and error.actual in str(error)


def test_checker_check_returns_digest_and_normalises_case(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(DATA)
    assert Checker("SHA256", SHA256.upper()).check(path) == SHA256


def test_checker_from_meta_picks_strongest() -> None:
    md5 = hashlib.md5(DATA).hexdigest()
    assert Checker.from_meta({"md5": md5, "sha256": SHA256}) == Checker("sha256", SHA256)
    assert Checker.from_meta({"md5": md5, "url": "x"}) == Checker("md5", md5)
    assert Checker.from_meta({"url": "x", "sha256": ""}) is None
    assert Checker.from_meta(None) is None


@pytest.mark.parametrize(("algorithm", "digest"), [("crc32", "00"), ("sha256", "abc"), ("md5", "z" * 32)])
def test_checker_rejects_bad_algorithm_or_digest(algorithm: str, digest: str) -> None:
    with pytest.raises(MetaError):
        Checker(algorithm, digest)


# --------------------------------------------------------------------------- fetch: happy paths


def test_fetch_downloads_and_verifies(served, checker, tmp_path: Path) -> None:
    server, url = served
    reporter = RecordingReporter()
    dest = fetch(url, tmp_path / "dl" / "data.bin", checker=checker, reporter=reporter)
    assert dest.read_bytes() == DATA
    assert not part_of(dest).exists()
    assert [r.status for r in server.requests] == [200]
    description, total, updates = reporter.bars[0]
    assert description == "data.bin" and total == len(DATA) and sum(updates) == len(DATA)


def test_fetch_without_checker_keeps_file(served, tmp_path: Path) -> None:
    _, url = served
    assert fetch([url], tmp_path / "x.bin").read_bytes() == DATA


def test_redirect_is_followed(served, checker, tmp_path: Path) -> None:
    server, url = served
    server.behave("/old/data.bin", redirect="/files/data.bin")
    assert fetch(server.url_for("old/data.bin"), tmp_path / "d", checker=checker).read_bytes() == DATA
    assert [(r.path, r.status) for r in server.requests] == [("/old/data.bin", 302), ("/files/data.bin", 200)]


def test_download_waits_for_another_process_holding_the_lock(served, checker, tmp_path: Path) -> None:
    import threading

    import filelock

    server, url = served
    dest = tmp_path / "data.bin"
    other = filelock.FileLock(str(dest) + ".lock", thread_local=False)
    other.acquire()
    reporter = RecordingReporter()
    done: list[Path] = []
    worker = threading.Thread(target=lambda: done.append(fetch(url, dest, checker=checker, reporter=reporter)))
    worker.start()
    worker.join(timeout=0.5)
    assert worker.is_alive() and server.requests == []
    dest.write_bytes(DATA)  # the other process finishes the same download
    other.release()
    worker.join(timeout=10)
    assert done == [dest] and server.requests == []
    assert any("waiting for another process" in m for m in reporter.messages)


def test_import_does_not_load_requests() -> None:
    code = "import sys, ckx.transfer.fetch, ckx.transfer.unpack, ckx.transfer.checksum; print('requests' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"


# --------------------------------------------------------------------------- resume


def test_cut_download_resumes_with_range_and_verifies(served, checker, tmp_path: Path) -> None:
    server, url = served
    server.behave("/files/data.bin", cut=1)
    dest = fetch(url, tmp_path / "data.bin", checker=checker, backoff=0)
    assert dest.read_bytes() == DATA
    log = server.requests
    assert [r.status for r in log] == [200, 206]
    assert log[0].range is None
    assert log[1].range == f"bytes={len(DATA) // 2}-"
    assert not part_of(dest).exists()


def test_repeated_cuts_resume_each_time(served, checker, tmp_path: Path) -> None:
    server, url = served
    server.behave("/files/data.bin", cut=3)
    dest = fetch(url, tmp_path / "data.bin", checker=checker, retries=3, backoff=0)
    assert dest.read_bytes() == DATA
    ranges = [r.range for r in server.requests]
    assert ranges == [None, "bytes=102400-", "bytes=153600-", "bytes=179200-"]


def test_cut_beyond_retries_keeps_part_for_next_run(served, checker, tmp_path: Path) -> None:
    server, url = served
    server.behave("/files/data.bin", cut=5)
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError) as info:
        fetch(url, dest, checker=checker, retries=1, backoff=0)
    assert len(info.value.attempts) == 2
    assert "connection lost" in info.value.attempts[0]
    assert not dest.exists()
    kept = part_of(dest).stat().st_size
    assert 0 < kept < len(DATA)
    server.behave("/files/data.bin")  # the site is healthy again
    server.clear_log()
    assert fetch(url, dest, checker=checker).read_bytes() == DATA
    assert [(r.status, r.range) for r in server.requests] == [(206, f"bytes={kept}-")]


def test_existing_part_is_resumed(served, checker, tmp_path: Path) -> None:
    server, url = served
    dest = tmp_path / "data.bin"
    part_of(dest).write_bytes(DATA[:1000])
    assert fetch(url, dest, checker=checker).read_bytes() == DATA
    assert [(r.status, r.range) for r in server.requests] == [(206, "bytes=1000-")]


def test_server_ignoring_range_restarts_from_zero(served, checker, tmp_path: Path) -> None:
    server, url = served
    server.behave("/files/data.bin", no_range=True)
    dest = tmp_path / "data.bin"
    part_of(dest).write_bytes(DATA[:1000])
    assert fetch(url, dest, checker=checker).read_bytes() == DATA
    assert [(r.status, r.range) for r in server.requests] == [(200, "bytes=1000-")]


def test_complete_part_answered_416_is_verified_and_kept(served, checker, tmp_path: Path) -> None:
    server, url = served
    dest = tmp_path / "data.bin"
    part_of(dest).write_bytes(DATA)
    assert fetch(url, dest, checker=checker).read_bytes() == DATA
    assert [r.status for r in server.requests] == [416]


def test_part_longer_than_file_restarts_from_zero(served, checker, tmp_path: Path) -> None:
    server, url = served
    dest = tmp_path / "data.bin"
    part_of(dest).write_bytes(DATA + b"junk at the end")
    assert fetch(url, dest, checker=checker, backoff=0).read_bytes() == DATA
    assert [(r.status, r.range) for r in server.requests] == [(416, f"bytes={len(DATA) + 15}-"), (200, None)]


def test_stale_part_of_another_file_is_discarded_after_mismatch(served, checker, tmp_path: Path) -> None:
    server, url = served
    dest = tmp_path / "data.bin"
    part_of(dest).write_bytes(b"X" * 1000)  # same length prefix, different bytes
    assert fetch(url, dest, checker=checker, backoff=0).read_bytes() == DATA
    assert [(r.status, r.range) for r in server.requests] == [(206, "bytes=1000-"), (200, None)]


def test_read_timeout_mid_body_resumes(served, checker, tmp_path: Path) -> None:
    server, url = served
    server.behave("/files/data.bin", stall=3.0)
    dest = fetch(url, tmp_path / "data.bin", checker=checker, timeout=(2.0, 0.3), backoff=0)
    assert dest.read_bytes() == DATA
    assert [r.range for r in server.requests] == [None, f"bytes={len(DATA) // 2}-"]


# --------------------------------------------------------------------------- integrity


def test_wrong_checksum_raises_and_leaves_nothing(served, tmp_path: Path) -> None:
    server, url = served
    wrong = Checker("sha256", hashlib.sha256(b"something else").hexdigest())
    dest = tmp_path / "data.bin"
    with pytest.raises(ChecksumMismatch) as info:
        fetch(url, dest, checker=wrong)
    error = info.value
    assert error.exit_code == 5
    assert wrong.expected in str(error) and SHA256 in str(error)
    assert (error.expected, error.actual) == (wrong.expected, SHA256)
    assert not dest.exists() and not part_of(dest).exists()


def test_mirror_serving_wrong_bytes_falls_through_to_good_one(http_server, checker, tmp_path: Path) -> None:  # noqa: F811
    bad = http_server.put("bad/data.bin", DATA)
    http_server.behave("/bad/data.bin", wrong_bytes=b"an error page")
    good = http_server.put("good/data.bin", DATA)
    dest = fetch([bad, good], tmp_path / "data.bin", checker=checker)
    assert dest.read_bytes() == DATA


def test_every_mirror_wrong_raises_mismatch_listing_attempts(http_server, checker, tmp_path: Path) -> None:  # noqa: F811
    urls = [http_server.put(f"m{i}/data.bin", DATA) for i in range(2)]
    for i in range(2):
        http_server.behave(f"/m{i}/data.bin", wrong_bytes=b"nope")
    with pytest.raises(ChecksumMismatch) as info:
        fetch(urls, tmp_path / "data.bin", checker=checker)
    assert urls[0] in info.value.hint and urls[1] in info.value.hint


# --------------------------------------------------------------------------- mirrors and retries


@pytest.mark.parametrize("status", [404, 410])
def test_missing_on_first_mirror_falls_through(http_server, checker, tmp_path: Path, status: int) -> None:  # noqa: F811
    http_server.behave("/first/data.bin", status=status)
    second = http_server.put("second/data.bin", DATA)
    dest = fetch([http_server.url_for("first/data.bin"), second], tmp_path / "d", checker=checker)
    assert dest.read_bytes() == DATA
    assert [(r.path, r.status) for r in http_server.requests] == [
        ("/first/data.bin", status),
        ("/second/data.bin", 200),
    ]


def test_refused_connection_falls_through_without_retries(served, checker, tmp_path: Path) -> None:
    server, url = served
    reporter = RecordingReporter()
    dest = fetch([unused_url("data.bin"), url], tmp_path / "d", checker=checker, backoff=5, reporter=reporter)
    assert dest.read_bytes() == DATA
    assert any("cannot connect" in w for w in reporter.warnings)
    assert len(server.requests) == 1


def test_server_errors_then_ok_succeeds_with_retries(served, checker, tmp_path: Path) -> None:
    server, url = served
    server.behave("/files/data.bin", fail_then_ok=2)
    assert fetch(url, tmp_path / "d", checker=checker, retries=3, backoff=0.01).read_bytes() == DATA
    assert [r.status for r in server.requests] == [500, 500, 200]


def test_server_errors_beyond_retries_move_to_next_mirror(http_server, checker, tmp_path: Path) -> None:  # noqa: F811
    first = http_server.put("a/data.bin", DATA)
    http_server.behave("/a/data.bin", fail_then_ok=10, fail_status=503)
    second = http_server.put("b/data.bin", DATA)
    assert fetch([first, second], tmp_path / "d", checker=checker, retries=2, backoff=0).read_bytes() == DATA
    assert [(r.path, r.status) for r in http_server.requests] == [("/a/data.bin", 503)] * 3 + [("/b/data.bin", 200)]


def test_all_mirrors_failing_lists_attempts_and_hint(http_server, checker, tmp_path: Path) -> None:  # noqa: F811
    http_server.behave("/gone.bin", status=404)
    http_server.behave("/broken.bin", status=500)
    urls = [http_server.url_for("gone.bin"), http_server.url_for("broken.bin"), unused_url("x.bin")]
    dest = tmp_path / "d"
    with pytest.raises(DownloadError) as info:
        fetch(urls, dest, checker=checker, retries=1, backoff=0, extra_hint="or use --variation=embedded")
    error = info.value
    assert error.exit_code == 1
    assert error.attempts == [
        f"{urls[0]} -> HTTP 404 Not Found",
        f"{urls[1]} -> HTTP 500 Internal Server Error",
        f"{urls[1]} -> HTTP 500 Internal Server Error",
        f"{urls[2]} -> cannot connect: Connection refused",
    ]
    assert all(a in str(error) for a in error.attempts)
    assert "--local_path=FILE" in error.hint and "--variation=embedded" in error.hint
    assert not dest.exists() and not part_of(dest).exists()


def test_no_urls_is_a_download_error(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="no URL"):
        fetch([], tmp_path / "d")


# --------------------------------------------------------------------------- cache


def test_cache_hit_makes_no_request(served, checker, tmp_path: Path) -> None:
    server, url = served
    dest = tmp_path / "data.bin"
    dest.write_bytes(DATA)
    assert fetch(url, dest, checker=checker) == dest
    assert server.requests == []


def test_corrupt_cached_file_is_downloaded_again(served, checker, tmp_path: Path) -> None:
    server, url = served
    dest = tmp_path / "data.bin"
    dest.write_bytes(DATA[:-1] + b"!")
    reporter = RecordingReporter()
    assert fetch(url, dest, checker=checker, reporter=reporter).read_bytes() == DATA
    assert len(server.requests) == 1
    assert any("downloading it again" in w for w in reporter.warnings)


def test_cached_download_path_separates_same_names(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    a = cached_download_path(home, "model.onnx", "a" * 32)
    b = cached_download_path(home, "model.onnx", SHA256.upper())
    assert a != b and a.name == b.name == "model.onnx"
    assert a.parent.parent == home.downloads and b.parent.name == SHA256
    assert cached_download_path(home, "x", url_key("http://a/x")) != cached_download_path(home, "x", url_key("http://b/x"))


@pytest.mark.parametrize(("filename", "digest"), [("../x", "ab"), ("a/b", "ab"), ("..", "ab"), ("x", "../ab"), ("x", "")])
def test_cached_download_path_refuses_paths(tmp_path: Path, filename: str, digest: str) -> None:
    with pytest.raises(MetaError):
        cached_download_path(Home(tmp_path), filename, digest)


def test_filename_from_url() -> None:
    assert filename_from_url(ZENODO_URL + "?download=1") == "resnet50_v1.onnx"
    assert filename_from_url("https://host/a%20b.tar/") == "a b.tar"


# --------------------------------------------------------------------------- URL map


def test_url_map_env_rewrites_real_zenodo_url(http_server, monkeypatch, tmp_path: Path) -> None:  # noqa: F811
    http_server.put("zenodo/record/2592612/files/resnet50_v1.onnx", DATA)
    monkeypatch.setenv("CKX_URL_MAP", f"https://example.org=http://127.0.0.1:1/x;https://zenodo.org={http_server.url}/zenodo")
    dest = fetch([ZENODO_URL], tmp_path / "resnet50_v1.onnx", checker=Checker("sha256", SHA256))
    assert dest.read_bytes() == DATA
    assert [r.path for r in http_server.requests] == ["/zenodo/record/2592612/files/resnet50_v1.onnx"]


def test_url_map_argument_wins_over_env_and_names_original_in_attempts(http_server, monkeypatch, tmp_path: Path) -> None:  # noqa: F811
    monkeypatch.setenv("CKX_URL_MAP", "https://zenodo.org=http://127.0.0.1:1/never")
    http_server.behave("/z/record/2592612/files/resnet50_v1.onnx", status=404)
    with pytest.raises(DownloadError) as info:
        fetch(ZENODO_URL, tmp_path / "m.onnx", url_map={"https://zenodo.org/": f"{http_server.url}/z/"})
    assert info.value.attempts == [
        f"{http_server.url}/z/record/2592612/files/resnet50_v1.onnx (for {ZENODO_URL}) -> HTTP 404 Not Found"
    ]


def test_map_url_longest_prefix_at_boundary() -> None:
    mapping = {"https://zenodo.org": "http://m/z", "https://zenodo.org/record/1": "http://m/one"}
    assert map_url("https://zenodo.org/record/2/f", mapping) == "http://m/z/record/2/f"
    assert map_url("https://zenodo.org/record/1/f", mapping) == "http://m/one/f"
    assert map_url("https://zenodo.org/record/12/f", mapping) == "http://m/z/record/12/f"
    assert map_url("https://zenodo.org.evil.example/f", mapping) == "https://zenodo.org.evil.example/f"
    assert map_url("https://other.org/f", mapping) == "https://other.org/f"
    assert map_url("https://other.org/f", None) == "https://other.org/f"


def test_parse_url_map_forms_and_errors() -> None:
    assert parse_url_map(" a=b ; c=d=e;\n") == {"a": "b", "c": "d=e"}
    assert parse_url_map('{"https://x": "http://y"}') == {"https://x": "http://y"}
    assert parse_url_map("") == {}
    for bad in ("no-equals", "=http://x", "{not json"):
        with pytest.raises(UsageError, match="CKX_URL_MAP"):
            parse_url_map(bad)


def test_load_url_map_merges_settings_and_env(tmp_path: Path) -> None:
    home = Home(tmp_path)
    assert load_url_map(home, environ={}) == {}
    home.settings_path.write_text(json.dumps({"url_map": {"https://a": "http://s/a", "https://b": "http://s/b"}}))
    merged = load_url_map(home, environ={"CKX_URL_MAP": "https://b=http://env/b"})
    assert merged == {"https://a": "http://s/a", "https://b": "http://env/b"}


@pytest.mark.parametrize("settings", ['{"url_map": ["x"]}', '{"url_map": {"a": 1}}', "{broken"])
def test_load_url_map_rejects_bad_settings(tmp_path: Path, settings: str) -> None:
    home = Home(tmp_path)
    home.settings_path.write_text(settings)
    with pytest.raises(MetaError, match="settings.json"):
        load_url_map(home, environ={})


# --------------------------------------------------------------------------- offline


def test_offline_makes_no_request(served, checker, tmp_path: Path) -> None:
    server, url = served
    with pytest.raises(DownloadError) as info:
        fetch(url, tmp_path / "d", checker=checker, offline=True, extra_hint="use the embedded model")
    assert "offline" in str(info.value)
    assert "--local_path=FILE" in info.value.hint and "embedded model" in info.value.hint
    assert server.requests == []


def test_offline_env_makes_no_request(served, checker, monkeypatch, tmp_path: Path) -> None:
    server, url = served
    monkeypatch.setenv("CKX_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline"):
        fetch(url, tmp_path / "d", checker=checker)
    assert server.requests == []


def test_offline_still_returns_verified_cache(served, checker, tmp_path: Path) -> None:
    server, url = served
    dest = tmp_path / "d"
    dest.write_bytes(DATA)
    assert fetch(url, dest, checker=checker, offline=True) == dest
    assert server.requests == []


# --------------------------------------------------------------------------- --local_path


def test_local_copy_verifies_and_places_file(checker, tmp_path: Path) -> None:
    source = tmp_path / "mine.bin"
    source.write_bytes(DATA)
    dest = local_copy(source, tmp_path / "cache" / "x" / "data.bin", checker)
    assert dest.read_bytes() == DATA
    assert source.read_bytes() == DATA
    assert sorted(p.name for p in dest.parent.iterdir()) == ["data.bin"]


def test_local_copy_across_devices_copies_and_hashes(checker, tmp_path: Path) -> None:
    source = tmp_path / "mine.bin"
    source.write_bytes(DATA)
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second file system")
    import tempfile

    with tempfile.TemporaryDirectory(dir=shm) as other:
        dest = local_copy(source, Path(other) / "data.bin", checker)
        assert dest.read_bytes() == DATA and os.stat(dest).st_nlink == 1


def test_local_copy_mismatch_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "mine.bin"
    source.write_bytes(DATA + b"tampered")
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumMismatch) as info:
        local_copy(source, cache / "data.bin", Checker("sha256", SHA256))
    assert str(source) in str(info.value) and SHA256 in str(info.value)
    assert list(cache.iterdir()) == []


def test_local_copy_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        local_copy(tmp_path / "absent.bin", tmp_path / "d", None)


def test_unwritable_destination_is_a_ckx_error(served, tmp_path: Path) -> None:
    _, url = served
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CkxError, match="cannot write"):
        fetch(url, blocker / "d.bin")
