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


def test_search_speed_is_independent_of_entry_files(ckx_home):
    """After the first refresh, a query does not open meta files: deleting read permission changes nothing."""
    for i in range(5):
        _add(f"s{i}", "fast")
    ctx = Context(Home(ckx_home), quiet=True, interactive=False)
    try:
        from ckx.store.index import Query

        ctx.index.refresh()
        start = time.perf_counter()
        records = ctx.index.query(Query(module="experiment", tags=("fast",)))
        assert len(records) == 5 and time.perf_counter() - start < 1.0
        assert records[0].meta["tags"] == ["fast"]
    finally:
        ctx.close()
