"""Hostile archives: each test unzips one as an attacker would and checks that it is held, that nothing is
written outside the target, and that no partial state is left (no files, no index rows, no staging)."""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from ckx.api import access
from ckx.core.errors import EXIT_INTEGRITY, EXIT_USAGE
from ckx.core.home import Home

PLANTED_SITE = "import os\nos.system('touch /tmp/ckx-pwned')\n"


def make_zip(path: Path, files: dict[str, bytes | str | dict], *, stored: bool = False) -> Path:
    """A zip of ``files`` (name -> content; dicts become JSON), in the given order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, content in files.items():
            if isinstance(content, dict):
                content = json.dumps(content)
            zf.writestr(name, content.encode() if isinstance(content, str) else content)
    return path


def flip_byte_in_member(archive: Path, member: str) -> None:
    """Corrupt one byte in the middle of a stored member's data (so only its CRC check can tell)."""
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(member)
    data = bytearray(archive.read_bytes())
    name_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.compress_size // 2] ^= 0xFF
    archive.write_bytes(bytes(data))


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every file (content) and link (target) under ``root``, by relative path."""
    result: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                result[rel] = "-> " + os.readlink(path)
            elif path.is_file():
                result[rel] = path.read_bytes()
            else:
                result[rel + "/"] = "dir"
    return result


def meta(uid: str, alias: str, **extra) -> dict:
    return {"uid": uid, "alias": alias, "tags": ["t"], "schema_version": 1, **extra}


@pytest.fixture
def fake_builtin(tmp_path, monkeypatch) -> Path:
    """A throwaway built-in repo (the checkout's layout: entries beside the ckx package)."""
    root = tmp_path / "builtin-copy"
    files = {
        "ckx-repo.json": json.dumps({"name": "builtin", "uid": "00000000000000b1", "schema_version": 1}),
        "ckx/__init__.py": '__version__ = "0"\n',
        "programs/x/meta.json": json.dumps(meta("00000000000000c1", "x", argv=["python", "run.py"])),
        "programs/x/run.py": "print('x')\n",
    }
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    monkeypatch.setenv("CKX_BUILTIN_REPO", str(root))
    return root


def _planted_builtin_archive(tmp_path: Path) -> Path:
    return make_zip(tmp_path / "evil.zip", {
        "ckx-repo.json": {"name": "builtin", "uid": "00000000000000b1", "schema_version": 1},
        "programs/x/meta.json": meta("00000000000000c1", "x", argv=["python", "run.py"]),
        "programs/x/sitecustomize.py": PLANTED_SITE,
        "ckx/__init__.py": "import os\nos.system('id > /tmp/ckx-pwned')\n",
    })


def _repos_dir(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "repos").iterdir()) if (home / "repos").is_dir() else []


def _registered(home: Path) -> list[str]:
    path = home / "repos.json"
    return sorted(json.loads(path.read_text())["repos"]) if path.is_file() else []


def test_archive_named_builtin_never_merges_into_the_builtin_repo(tmp_path, ckx_home, fake_builtin, cli, monkeypatch):
    archive = _planted_builtin_archive(tmp_path)
    before = snapshot(fake_builtin)
    access({"action": "list", "module": "program"})  # the local repo exists from here on
    local_before = snapshot(ckx_home / "repos")
    # Unnamed, through the API (the action the web service calls), with every flag an attacker could add.
    result = access({"action": "unzip", "module": "repo", "zip": str(archive), "overwrite": True, "allow_code": True})
    assert result["return"] == EXIT_USAGE and "'builtin'" in result["error"] and "did not name" in result["error"]
    # Named, on the command line, and in development mode too: never into the built-in repo.
    proc = cli("unzip", "repo:builtin", f"--zip={archive}", "--overwrite", "--allow_code", env={"CKX_DEV": "1"})
    assert proc.returncode == EXIT_USAGE and "never writes into the built-in repo" in proc.stderr, proc.stderr
    proc = cli("unzip", "repo", f"--zip={archive}", "--overwrite", "--allow_code")
    assert proc.returncode == EXIT_USAGE and "internal error" not in proc.stderr
    assert snapshot(fake_builtin) == before
    assert snapshot(ckx_home / "repos") == local_before
    assert not (fake_builtin / "programs/x/sitecustomize.py").exists()
    # A name of its own makes it a new repo from others, with every file it wrote listed.
    result = access({"action": "unzip", "module": "repo", "entry": "evil", "zip": str(archive)})
    assert result["return"] == 0 and result["created"] and result["repo"] == "evil"
    assert "programs/x/sitecustomize.py" in result["written"] and "ckx/__init__.py" in result["written"]
    assert "programs/x/sitecustomize.py" in result["text"]
    repos = json.loads((ckx_home / "repos.json").read_text())["repos"]
    assert repos["evil"]["origin"] == "unzipped"
    assert snapshot(fake_builtin) == before


def test_archive_named_after_a_registered_repo_is_not_merged_unless_named(tmp_path, ckx_home):
    assert access({"action": "add", "module": "repo", "entry": "team"})["return"] == 0
    team = ckx_home / "repos" / "team"
    before = snapshot(team)
    archive = make_zip(tmp_path / "team.zip", {
        "ckx-repo.json": {"name": "team", "uid": "00000000000000d1", "schema_version": 1},
        "experiments/e1/meta.json": meta("00000000000000e1", "e1"),
    })
    result = access({"action": "unzip", "module": "repo", "zip": str(archive)})
    assert result["return"] == EXIT_USAGE and "'team'" in result["error"] and "repo:team" in result["hint"]
    assert snapshot(team) == before
    result = access({"action": "unzip", "module": "repo", "entry": "team", "zip": str(archive)})
    assert result["return"] == 0 and result["written"] == ["experiments/e1/meta.json"]
    assert (team / "experiments/e1/meta.json").is_file()


def test_archive_naming_local_does_not_become_a_repo_or_merge(tmp_path, ckx_home):
    archive = make_zip(tmp_path / "local.zip", {
        "ckx-repo.json": {"name": "local", "uid": "00000000000000d2", "schema_version": 1},
        "experiments/e1/meta.json": meta("00000000000000e2", "e1"),
    })
    result = access({"action": "unzip", "module": "repo", "zip": str(archive)})
    assert result["return"] == EXIT_USAGE and "'local'" in result["error"]
    assert not (ckx_home / "repos/local/experiments/e1").exists() and _registered(ckx_home) == []


CODE_CARRIERS = {
    "package": ({"packages/p1/meta.json": meta("00000000000000f1", "p1")}, "package:p1"),
    "soft": ({"soft/s1/meta.json": meta("00000000000000f2", "s1")}, "soft:s1"),
    "program": ({"programs/g1/meta.json": meta("00000000000000f3", "g1")}, "program:g1"),
    "install hook": ({"experiments/e1/meta.json": meta("00000000000000f4", "e1"),
                      "experiments/e1/install.py": "def setup(i): return {'return': 0}\n"}, "experiment:e1"),
    "shell script": ({"experiments/e2/meta.json": meta("00000000000000f5", "e2"),
                      "experiments/e2/tools/run.sh": "#!/bin/sh\nrm -rf ~\n"}, "experiment:e2"),
    "argv": ({"experiments/e3/meta.json": meta("00000000000000f6", "e3", argv=["/bin/sh", "-c", "id"])}, "experiment:e3"),
    "nested run_cmds": ({"experiments/e4/meta.json": meta("00000000000000f7", "e4",
                                                           run={"run_cmds": {"x": {"run_cmd_main": "id"}}})},
                        "experiment:e4"),
    "loose script": ({"sitecustomize.py": PLANTED_SITE}, "sitecustomize.py"),
}


@pytest.mark.parametrize("case", sorted(CODE_CARRIERS))
def test_entries_that_carry_code_need_allow_code(case, tmp_path, ckx_home):
    files, label = CODE_CARRIERS[case]
    archive = make_zip(tmp_path / "code.zip", files)
    access({"action": "list", "module": "experiment"})
    local = ckx_home / "repos" / "local"
    before = snapshot(local)
    result = access({"action": "unzip", "module": "repo", "zip": str(archive)})
    assert result["return"] == EXIT_USAGE, result
    assert label in result["error"] and "--allow_code" in result["hint"]
    assert snapshot(local) == before
    result = access({"action": "unzip", "module": "repo", "zip": str(archive), "allow_code": True})
    assert result["return"] == 0, result
    assert sorted(result["written"]) == sorted(files)


def test_a_new_repo_from_an_archive_needs_no_allow_code(tmp_path, ckx_home):
    archive = make_zip(tmp_path / "tools.zip", {
        "ckx-repo.json": {"name": "tools", "uid": "00000000000000d3", "schema_version": 1},
        "packages/p1/meta.json": meta("00000000000000f8", "p1"),
        "packages/p1/install.py": "def setup(i): return {'return': 0}\n",
    })
    result = access({"action": "unzip", "module": "repo", "zip": str(archive)})
    assert result["return"] == 0 and result["created"]
    assert sorted(result["written"]) == ["ckx-repo.json", "packages/p1/install.py", "packages/p1/meta.json"]


def test_summary_lists_every_file_written_and_replaced(tmp_path, ckx_home, cli, cli_json):
    first = make_zip(tmp_path / "a.zip", {"experiments/a/meta.json": meta("00000000000000a1", "a"),
                                          "experiments/a/notes.txt": "one\n"})
    code, data = cli_json("unzip", "repo", f"--zip={first}")
    assert code == 0 and data["written"] == ["experiments/a/meta.json", "experiments/a/notes.txt"] and data["replaced"] == []
    second = make_zip(tmp_path / "b.zip", {"experiments/a/meta.json": meta("00000000000000a1", "a"),
                                           "experiments/a/notes.txt": "two\n", "experiments/a/more.txt": "new\n"})
    proc = cli("unzip", "repo", f"--zip={second}", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert "files written:\n  experiments/a/more.txt" in proc.stdout
    assert "files replaced:\n  experiments/a/meta.json\n  experiments/a/notes.txt" in proc.stdout
    assert (ckx_home / "repos/local/experiments/a/notes.txt").read_text() == "two\n"


def _no_staging_left(root: Path) -> None:
    left = [p for p in root.rglob(".unzip-*")]
    assert left == [], left


def test_corrupt_crc_in_the_second_member_extracts_and_indexes_nothing(tmp_path, ckx_home, cli):
    archive = make_zip(tmp_path / "crc.zip", {
        "experiments/a/meta.json": meta("00000000000000a2", "a"),
        "experiments/b/data.bin": b"0123456789" * 100,
        "experiments/b/meta.json": meta("00000000000000b2", "b"),
    }, stored=True)
    flip_byte_in_member(archive, "experiments/b/data.bin")
    access({"action": "list", "module": "experiment"})
    local = ckx_home / "repos" / "local"
    before = snapshot(local)
    result = access({"action": "unzip", "module": "repo", "zip": str(archive)})
    assert result["return"] == EXIT_INTEGRITY, result
    assert str(archive) in result["error"] and "experiments/b/data.bin" in result["error"]
    assert result["error_type"] == "IntegrityError" and "nothing was extracted" in result["error"]
    assert snapshot(local) == before
    _no_staging_left(local)
    listed = access({"action": "list", "module": "experiment"})
    assert [e for e in listed["entries"] if e["repo"] == "local"] == []
    proc = cli("unzip", "repo", f"--zip={archive}")
    assert proc.returncode == EXIT_INTEGRITY and "internal error" not in proc.stderr
    assert "experiments/b/data.bin" in proc.stderr


def test_overwrite_with_a_corrupt_third_file_replaces_nothing(tmp_path, ckx_home):
    good = make_zip(tmp_path / "good.zip", {
        "experiments/a/1.txt": "one\n", "experiments/a/2.txt": "two\n", "experiments/a/3.txt": "three\n",
        "experiments/a/meta.json": meta("00000000000000a3", "a"),
    })
    assert access({"action": "unzip", "module": "repo", "zip": str(good)})["return"] == 0
    local = ckx_home / "repos" / "local"
    before = snapshot(local)
    bad = make_zip(tmp_path / "bad.zip", {
        "experiments/a/1.txt": "ONE\n" * 50, "experiments/a/2.txt": "TWO\n" * 50, "experiments/a/3.txt": "THREE\n" * 50,
        "experiments/a/meta.json": meta("00000000000000a3", "a", note="replaced"),
    }, stored=True)
    flip_byte_in_member(bad, "experiments/a/3.txt")
    result = access({"action": "unzip", "module": "repo", "zip": str(bad), "overwrite": True})
    assert result["return"] == EXIT_INTEGRITY and "experiments/a/3.txt" in result["error"], result
    assert snapshot(local) == before
    _no_staging_left(local)
    loaded = access({"action": "load", "module": "experiment", "entry": "a"})
    assert "note" not in loaded["meta"]


def _limits(home: Path, **limits) -> None:
    (home / "settings.json").write_text(json.dumps({"limits": limits}))


def _zeros_zip(path: Path, size: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("experiments/z/meta.json", json.dumps(meta("00000000000000a4", "z")))
        with zf.open("experiments/z/zeros.bin", "w") as out:
            block = b"\0" * (1 << 20)
            for _ in range(size >> 20):
                out.write(block)
    return path


@pytest.mark.parametrize("limits, words", [
    ({"archive_max_bytes": 8 << 20, "archive_max_ratio": 100_000}, "expands to more than 8388608 bytes"),
    ({"archive_max_ratio": 100}, "over 100 times its own size"),
    ({"archive_max_members": 1}, "has more than 1 members"),
])
def test_zip_bomb_is_refused_before_anything_is_extracted(limits, words, tmp_path, ckx_home):
    archive = _zeros_zip(tmp_path / "bomb.zip", 32 << 20)
    assert archive.stat().st_size < 200_000  # 32 MiB of zeros in well under 200 KB: a ratio over 150
    _limits(ckx_home, **limits)
    access({"action": "list", "module": "experiment"})
    local = ckx_home / "repos" / "local"
    before = snapshot(local)
    result = access({"action": "unzip", "module": "repo", "zip": str(archive)})
    assert result["return"] == EXIT_INTEGRITY and result["error_type"] == "UnsafeArchive", result
    assert words in result["error"] and "settings.json" in result["hint"]
    assert snapshot(local) == before


def test_modest_archive_within_the_limits_unzips(tmp_path, ckx_home):
    archive = _zeros_zip(tmp_path / "fine.zip", 2 << 20)
    _limits(ckx_home, archive_max_ratio=100_000)
    result = access({"action": "unzip", "module": "repo", "zip": str(archive)})
    assert result["return"] == 0, result
    assert (ckx_home / "repos/local/experiments/z/zeros.bin").stat().st_size == 2 << 20


def test_unzip_from_a_url_is_bounded_in_size(tmp_path, ckx_home, http_server):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("experiments/big/meta.json", json.dumps(meta("00000000000000a5", "big")))
        zf.writestr("experiments/big/noise.bin", os.urandom(3 << 20))
    url = http_server.put("big.zip", buffer.getvalue())
    _limits(ckx_home, download_max_bytes=1 << 20)
    access({"action": "list", "module": "experiment"})
    local = ckx_home / "repos" / "local"
    before = snapshot(local)
    result = access({"action": "unzip", "module": "repo", "zip": url})
    assert result["return"] != 0 and "1048576" in result["error"], result
    assert snapshot(local) == before
    cache = Home(ckx_home).cache
    assert not cache.exists() or [p for p in cache.rglob("*") if p.is_file()] == []


def test_corrupt_member_in_a_whole_repo_archive_creates_and_registers_nothing(tmp_path, ckx_home):
    archive = make_zip(tmp_path / "repo-crc.zip", {
        "ckx-repo.json": {"name": "damaged", "uid": "00000000000000d4", "schema_version": 1},
        "experiments/a/data.bin": b"abcdefghij" * 100,
        "experiments/a/meta.json": meta("00000000000000a6", "a"),
    }, stored=True)
    flip_byte_in_member(archive, "experiments/a/data.bin")
    result = access({"action": "unzip", "module": "repo", "zip": str(archive)})
    assert result["return"] == EXIT_INTEGRITY and "experiments/a/data.bin" in result["error"], result
    assert _repos_dir(ckx_home) == ["local"] and _registered(ckx_home) == []


def test_staging_left_by_a_killed_unzip_is_removed_by_the_next(tmp_path, ckx_home):
    access({"action": "list", "module": "experiment"})
    local = ckx_home / "repos" / "local"
    left = local / ".unzip-999999-abcdef"  # a process that is gone: its lock file is free
    (left / "new/0").mkdir(parents=True)
    (left / "new/0/meta.json").write_text("{}")
    (left / ".owner.lock").write_text("999999\n")
    archive = make_zip(tmp_path / "ok.zip", {"experiments/a/meta.json": meta("00000000000000a7", "a")})
    result = access({"action": "unzip", "module": "repo", "zip": str(archive)})
    assert result["return"] == 0, result
    assert not left.exists()
    _no_staging_left(local)
