"""Repos that cannot be read, a bad repos.json, and the built-in repo's read-only standing."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ckx.api import access
from ckx.core.errors import EXIT_ERROR, EXIT_USAGE


def meta(uid: str, alias: str) -> dict:
    return {"uid": uid, "alias": alias, "tags": ["t"], "schema_version": 1}


def _register(home: Path, name: str, path: Path) -> None:
    (home / "repos.json").write_text(json.dumps(
        {"schema_version": 1, "repos": {name: {"path": str(path), "format": "ckx", "origin": "pulled"}}}))


def _unreadable(kind: str, tmp_path: Path) -> Path:
    """A repo directory that cannot be listed, made in a way that holds even for root."""
    if kind == "file":
        path = tmp_path / "not-a-dir"
        path.write_text("a file where a repo should be\n")
    elif kind == "dangling link":
        path = tmp_path / "gone"
        os.symlink(tmp_path / "nowhere", path)
    else:  # a directory without read permission (only binding for users other than root)
        path = tmp_path / "locked"
        (path / "experiments/e9").mkdir(parents=True)
        (path / "ckx-repo.json").write_text(json.dumps({"name": "broken", "uid": "0000000000000ba0", "schema_version": 1}))
        (path / "experiments/e9/meta.json").write_text(json.dumps(meta("0000000000000ba1", "e9")))
        path.chmod(0)
    return path


KINDS = ["file", "dangling link",
         pytest.param("permission denied", marks=pytest.mark.skipif(os.geteuid() == 0, reason="root reads any directory"))]


@pytest.mark.parametrize("kind", KINDS)
def test_an_unreadable_repo_is_a_warning_and_the_others_keep_working(kind, tmp_path, ckx_home, cli):
    assert access({"action": "add", "module": "experiment", "entry": "mine", "tags": "t"})["return"] == 0
    path = _unreadable(kind, tmp_path)
    _register(ckx_home, "broken", path)
    try:
        for request in ({"action": "list", "module": "experiment"},
                        {"action": "search", "module": "experiment", "tags": "t"}):
            result = access(request)
            assert result["return"] == 0, result
            assert [e["alias"] for e in result["entries"] if e["repo"] != "builtin"] == ["mine"]
            assert any("repo broken" in w and str(path) in w and "cannot be read" in w for w in result["warnings"])
        loaded = access({"action": "load", "module": "experiment", "entry": "mine"})
        assert loaded["return"] == 0 and loaded["meta"]["alias"] == "mine"
        proc = cli("list", "experiment")
        assert proc.returncode == 0 and "mine" in proc.stdout, proc.stderr
        assert "repo broken" in proc.stderr and "internal error" not in proc.stderr
    finally:
        if kind == "permission denied":
            path.chmod(0o755)


def test_a_repo_that_becomes_unreadable_drops_out_with_a_warning(tmp_path, ckx_home):
    repo = tmp_path / "team"
    assert access({"action": "add", "module": "repo", "entry": "team", "path": str(repo)})["return"] == 0
    (repo / "experiments/e1").mkdir(parents=True)
    (repo / "experiments/e1/meta.json").write_text(json.dumps(meta("0000000000000ba2", "e1")))
    assert [e["repo"] for e in access({"action": "list", "module": "experiment"})["entries"]] == ["team"]
    moved = tmp_path / "team-moved"
    repo.rename(moved)
    repo.write_text("now a file\n")
    result = access({"action": "list", "module": "experiment"})
    assert result["return"] == 0 and result["entries"] == []
    assert any("repo team" in w for w in result["warnings"])
    assert access({"action": "load", "module": "experiment", "entry": "e1"})["return"] != 0


def test_repos_json_with_a_number_as_path_names_the_file_and_field(ckx_home, cli):
    (ckx_home / "repos.json").write_text(json.dumps({"schema_version": 1, "repos": {"team": {"path": 5}}}))
    result = access({"action": "list", "module": "experiment"})
    assert result["return"] == EXIT_ERROR and result["error_type"] == "MetaError", result
    assert str(ckx_home / "repos.json") in result["error"] and "repos.team.path" in result["error"]
    proc = cli("list", "experiment")
    assert proc.returncode == EXIT_ERROR and "repos.team.path" in proc.stderr
    assert "internal error" not in proc.stderr and "TypeError" not in proc.stderr


@pytest.fixture
def fake_builtin(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "builtin-copy"
    (root / "programs").mkdir(parents=True)
    (root / "ckx-repo.json").write_text(json.dumps({"name": "builtin", "uid": "00000000000000b1", "schema_version": 1}))
    monkeypatch.setenv("CKX_BUILTIN_REPO", str(root))
    return root


def test_the_builtin_repo_is_read_only_unless_in_development_mode(fake_builtin, cli):
    proc = cli("add", "program:x", "--repo=builtin")
    assert proc.returncode == EXIT_USAGE and "read-only" in proc.stderr and "CKX_DEV=1" in proc.stderr, proc.stderr
    assert not (fake_builtin / "programs/x").exists()
    proc = cli("add", "program:x", "--repo=builtin", env={"CKX_DEV": "1"})
    assert proc.returncode == 0, proc.stderr
    assert (fake_builtin / "programs/x/meta.json").is_file()
    proc = cli("rm", "builtin:program:x", "--force")
    assert proc.returncode == EXIT_USAGE and "read-only" in proc.stderr
    assert (fake_builtin / "programs/x/meta.json").is_file()
