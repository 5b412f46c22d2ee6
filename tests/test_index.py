"""The SQLite index: incremental refresh, hand edits and deletions, corrupt metas, concurrency, rebuild."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_ck_repo

from ckx.api import access
from ckx.store.context import Context
from ckx.core.home import Home

ROOT = Path(__file__).resolve().parent.parent


def _cids(result):
    assert result["return"] == 0, result
    return sorted(e["alias"] for e in result["entries"] if e["repo"] == "local")


def _add(alias, tags):
    result = access({"action": "add", "module": "experiment", "entry": alias, "tags": tags})
    assert result["return"] == 0, result
    return Path(result["path"])


def _bump(path: Path) -> None:
    """Make sure the next write gets a different mtime even on coarse-grained clocks."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_hand_edit_of_meta_is_picked_up(ckx_home):
    path = _add("e1", "alpha")
    assert _cids(access({"action": "search", "module": "experiment", "tags": "alpha"})) == ["e1"]
    meta_file = path / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["tags"] = ["beta"]
    with open(meta_file, "w") as handle:  # edited in place: the directory's mtime does not change
        json.dump(meta, handle)
    _bump(meta_file)
    assert _cids(access({"action": "search", "module": "experiment", "tags": "alpha"})) == []
    assert _cids(access({"action": "search", "module": "experiment", "tags": "beta"})) == ["e1"]


def test_hand_deleted_and_hand_added_entries(ckx_home):
    path = _add("gone", "t")
    _add("stays", "t")
    assert _cids(access({"action": "search", "module": "experiment", "tags": "t"})) == ["gone", "stays"]
    shutil.rmtree(path)
    assert _cids(access({"action": "search", "module": "experiment", "tags": "t"})) == ["stays"]
    new_dir = path.parent / "by-hand"
    new_dir.mkdir()
    (new_dir / "meta.json").write_text(json.dumps(
        {"uid": "00000000000000aa", "alias": "by-hand", "tags": ["t"], "schema_version": 1}))
    assert _cids(access({"action": "search", "module": "experiment", "tags": "t"})) == ["by-hand", "stays"]


def test_yaml_meta_is_indexed(ckx_home):
    edir = Home(ckx_home).local_repo / "experiments" / "yml"
    Context(Home(ckx_home)).registry  # creates the local repo
    edir.mkdir(parents=True)
    (edir / "meta.yaml").write_text("uid: 00000000000000ab\nalias: yml\ntags: [y1, y2]\nschema_version: 1\n")
    assert _cids(access({"action": "search", "module": "experiment", "tags": "y2"})) == ["yml"]


def test_corrupt_meta_warns_and_others_stay_searchable(ckx_home, cli):
    good = _add("good", "t")
    bad = _add("bad", "t")
    (bad / "meta.json").write_text("{ this is not json")
    _bump(bad / "meta.json")
    result = access({"action": "search", "module": "experiment", "tags": "t"})
    assert _cids(result) == ["good"]
    assert any(str(bad / "meta.json") in w for w in result["warnings"])
    proc = cli("search", "experiment", "--tags=t")
    assert proc.returncode == 0 and "local:experiment:good" in proc.stdout
    assert "warning:" in proc.stderr and "meta.json" in proc.stderr and "line 1" in proc.stderr
    assert good.is_dir()


def test_reindex_rebuilds_from_scratch(ckx_home, cli):
    _add("r1", "t")
    index_path = Home(ckx_home).index_path
    with sqlite3.connect(index_path) as db:
        db.execute("DELETE FROM tags")
    assert _cids(access({"action": "search", "module": "experiment", "tags": "t"})) == []  # stale on purpose
    proc = cli("reindex")
    assert proc.returncode == 0 and "indexed" in proc.stdout
    assert _cids(access({"action": "search", "module": "experiment", "tags": "t"})) == ["r1"]


def test_corrupt_index_file_is_rebuilt(ckx_home):
    _add("c1", "t")
    index_path = Home(ckx_home).index_path
    for suffix in ("-wal", "-shm"):
        Path(str(index_path) + suffix).unlink(missing_ok=True)
    index_path.write_bytes(b"this is not a database" * 100)
    result = access({"action": "search", "module": "experiment", "tags": "t"})
    assert _cids(result) == ["c1"]


def test_refresh_reads_only_what_changed(ckx_home):
    for i in range(30):
        _add(f"n{i}", "bulk")
    ctx = Context(Home(ckx_home), quiet=True, interactive=False)
    try:
        assert ctx.index.refresh(["experiment"], force=True) == {"added": 0, "updated": 0, "removed": 0}
        meta_file = Home(ckx_home).local_repo / "experiments" / "n7" / "meta.json"
        meta = json.loads(meta_file.read_text())
        meta["tags"].append("extra")
        meta_file.write_text(json.dumps(meta))
        _bump(meta_file)
        assert ctx.index.refresh(["experiment"], force=True) == {"added": 0, "updated": 1, "removed": 0}
    finally:
        ctx.close()


ADDER = """
import sys
from ckx.api import access
prefix = sys.argv[1]
for i in range(int(sys.argv[2])):
    r = access({"action": "add", "module": "experiment", "entry": f"{prefix}-{i}", "tags": "concurrent," + prefix})
    assert r["return"] == 0, r
    r = access({"action": "search", "module": "experiment", "tags": "concurrent"})
    assert r["return"] == 0, r
"""


def test_concurrent_adds_from_two_processes(ckx_home):
    env = dict(os.environ, CKX_HOME=str(ckx_home), PYTHONPATH=str(ROOT))
    count = 25
    procs = [subprocess.Popen([sys.executable, "-c", ADDER, prefix, str(count)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for prefix in ("p", "q")]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    result = access({"action": "search", "module": "experiment", "tags": "concurrent"})
    assert len(result["entries"]) == 2 * count
    with sqlite3.connect(Home(ckx_home).index_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM entries WHERE module='experiment'").fetchone()[0] == 2 * count
        rows = db.execute("SELECT COUNT(*) FROM tags WHERE tag='concurrent'").fetchone()[0]
        assert rows == 2 * count


def test_concurrent_add_of_the_same_alias_keeps_one(ckx_home):
    env = dict(os.environ, CKX_HOME=str(ckx_home), PYTHONPATH=str(ROOT))
    code = ("import sys; from ckx.api import access; "
            "r = access({'action': 'add', 'module': 'experiment', 'entry': 'same', 'tags': sys.argv[1]}); "
            "print(r['return'])")
    procs = [subprocess.Popen([sys.executable, "-c", code, tag], env=env, stdout=subprocess.PIPE, text=True)
             for tag in ("a", "b", "c")]
    codes = sorted(int(p.communicate(timeout=120)[0].strip()) for p in procs)
    assert codes.count(0) == 1 and codes.count(1) == 2
    entries = [e for e in access({"action": "list", "module": "experiment"})["entries"] if e["alias"] == "same"]
    assert len(entries) == 1


class _Opens:
    """Every file this process opens while recording, seen through a Python audit hook ("open" events)."""

    def __init__(self) -> None:
        self.recording = False
        self.paths: list[str] = []
        sys.addaudithook(self._hook)  # hooks stay for the process's lifetime: this one records only when asked

    def _hook(self, event: str, args: tuple) -> None:
        if self.recording and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            self.paths.append(os.fsdecode(args[0]))

    def during(self, action):
        self.paths.clear()
        self.recording = True
        try:
            return action()
        finally:
            self.recording = False


def test_search_speed_is_independent_of_entry_files(ckx_home):
    """Once indexed, a query opens no meta file: it answers from the index, however big the entry files."""
    from ckx.store.index import Query

    metas = [_add(f"s{i}", "fast") / "meta.json" for i in range(5)]
    opens = _Opens()
    ctx = Context(Home(ckx_home), quiet=True, interactive=False)
    try:
        ctx.index.refresh()
        records = opens.during(lambda: ctx.index.query(Query(module="experiment", tags=("fast",))))
        assert len(records) == 5 and records[0].meta["tags"] == ["fast"]
        assert not {str(m) for m in metas} & set(opens.paths), opens.paths
        # the hook does see the index reading a meta file: the one edited by hand, and only that one
        data = json.loads(metas[2].read_text())
        data["tags"].append("edited")
        metas[2].write_text(json.dumps(data))
        ctx.index.expire()
        records = opens.during(lambda: ctx.index.query(Query(module="experiment", tags=("edited",))))
        assert [r.alias for r in records] == ["s2"]
        assert [p for p in opens.paths if p.endswith("meta.json")] == [str(metas[2])]
    finally:
        ctx.close()


# The CLI in a subprocess, reporting on stderr which meta files it opened (a Python audit hook).
_CLI_WITH_OPENS = """
import json, sys
opened = []
sys.addaudithook(lambda event, args: opened.append(args[0]) if event == "open" and isinstance(args[0], str)
                 and args[0].endswith("meta.json") else None)
from ckx.cli.main import main
code = main(sys.argv[1:])
print("OPENED " + json.dumps(opened), file=sys.stderr)
sys.exit(code)
"""


def _search_ck(home: Path, tags: str) -> tuple[list[str], list[str]]:
    env = dict(os.environ, CKX_HOME=str(home), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", _CLI_WITH_OPENS, "search", "package", f"--tags={tags}", "--json"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    opened = json.loads(proc.stderr.rsplit("OPENED ", 1)[1])
    found = sorted(e["alias"] or e["uid"] for e in json.loads(proc.stdout)["entries"] if e["repo"] == "big")
    return found, opened


@pytest.mark.slow
def test_hand_edits_in_a_big_ck_repo_are_caught_by_the_next_cli_search(ckx_home, cli, tmp_path):
    """Edited, deleted and added entries of a CK-format repo show in the next search, which reads only them."""
    count = 3000
    entries = [(f"pkg-{i:05d}", f"{i:016x}", {"tags": ["lib", "bulk", f"n{i % 7}"]}) for i in range(count)]
    root = make_ck_repo(tmp_path / "big", "big", {"package": entries})
    assert cli("add", "repo:big", f"--path={root}", "--quiet").returncode == 0
    found, _ = _search_ck(ckx_home, "bulk,n3")
    assert len(found) == len(range(3, count, 7))
    found, opened = _search_ck(ckx_home, "bulk,n3")
    assert "pkg-00003" in found and opened == []  # nothing changed: no meta file opened
    edited = root / "package" / "pkg-00011" / ".cm" / "meta.json"
    with open(edited, "w") as handle:  # in place: no directory's mtime changes
        json.dump({"tags": ["lib", "bulk", "n3", "edited"]}, handle)
    shutil.rmtree(root / "package" / "pkg-00003")
    added = root / "package" / "pkg-new" / ".cm"
    added.mkdir(parents=True)
    (added / "meta.json").write_text(json.dumps({"tags": ["lib", "bulk", "n3"]}))
    (root / "package" / ".cm" / "alias-a-pkg-new").write_text("00000000000fffff\n")
    found, opened = _search_ck(ckx_home, "bulk,n3")
    assert "pkg-00011" in found and "pkg-00003" not in found and "pkg-new" in found
    assert len(found) == len(range(3, count, 7)) + 1
    assert sorted(opened) == sorted([str(edited), str(added / "meta.json")])
    assert _search_ck(ckx_home, "edited")[0] == ["pkg-00011"]


def test_a_meta_rewritten_with_its_old_mtime_put_back_is_read_again(ckx_home):
    """cp -p, tar and rsync -t restore the mtime of a changed file; its ctime still moves, and so does the index."""
    meta_file = _add("kept", "before") / "meta.json"
    assert _cids(access({"action": "search", "module": "experiment", "tags": "before"})) == ["kept"]
    st = meta_file.stat()
    meta_file.write_text(meta_file.read_text().replace('"before"', '"after!"'))  # the size stays too
    os.utime(meta_file, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (meta_file.stat().st_mtime_ns, meta_file.stat().st_size) == (st.st_mtime_ns, st.st_size)
    assert _cids(access({"action": "search", "module": "experiment", "tags": "after!"})) == ["kept"]


def test_stamps_checked_by_several_threads_find_what_one_thread_finds(tmp_path, monkeypatch):
    from ckx.store import stamps

    rows = []
    for number in range(3 * stamps.PARALLEL_FROM):
        meta = tmp_path / f"e{number}" / "meta.json"
        meta.parent.mkdir()
        meta.write_text("{}")
        rows.append((number, f"e{number}/meta.json", stamps.stamp_of(meta.stat())))
    stored = stamps.ModuleStamps.decode(*stamps.ModuleStamps.from_rows(rows).encode())
    edited = [0, stamps.PARALLEL_FROM - 1, stamps.PARALLEL_FROM, 3 * stamps.PARALLEL_FROM - 1]
    for number in edited:
        (tmp_path / f"e{number}" / "meta.json").write_text("{ }")
    (tmp_path / "e7" / "meta.json").unlink()
    expected = sorted(edited + [7])
    monkeypatch.setattr(stamps, "MAX_THREADS", 1)
    assert stored.changed(str(tmp_path)) == expected
    monkeypatch.setattr(stamps, "MAX_THREADS", 4)
    monkeypatch.setattr(stamps.os, "cpu_count", lambda: 4)
    assert stored.changed(str(tmp_path)) == expected
