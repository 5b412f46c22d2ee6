"""Symlinks inside a repo that lead out of it: metas, entry directories and module directories are skipped
with a warning naming them; load, cp and zip never follow a link out."""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

from ckx.api import access
from ckx.core.errors import EXIT_NOT_FOUND

SECRET = "the contents of a file outside every repo\n"


def meta(uid: str, alias: str) -> str:
    return json.dumps({"uid": uid, "alias": alias, "tags": ["t"], "schema_version": 1})


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def linked_repo(tmp_path, ckx_home):
    """Repo "shared" with a good entry and links out: a meta, an entry directory, a module directory, a file."""
    outside = tmp_path / "outside"
    (outside / "entry").mkdir(parents=True)
    (outside / "meta.json").write_text(meta("0000000000000e01", "leak"))
    (outside / "secret.txt").write_text(SECRET)
    (outside / "entry/meta.json").write_text(meta("0000000000000e02", "linked"))
    (outside / "entry/secret.txt").write_text(SECRET)
    (outside / "platforms/p1").mkdir(parents=True)
    (outside / "platforms/p1/meta.json").write_text(meta("0000000000000e03", "p1"))
    repo = tmp_path / "shared"
    result = access({"action": "add", "module": "repo", "entry": "shared", "path": str(repo)})
    assert result["return"] == 0, result
    experiments = repo / "experiments"
    (experiments / "good").mkdir(parents=True)
    (experiments / "good/meta.json").write_text(meta("0000000000000e04", "good"))
    (experiments / "good/notes.txt").write_text("fine\n")
    os.symlink(outside / "secret.txt", experiments / "good/escape.txt")
    (experiments / "leak").mkdir()
    os.symlink(outside / "meta.json", experiments / "leak/meta.json")
    os.symlink(outside / "entry", experiments / "linked")
    os.symlink(outside / "platforms", repo / "platforms")
    return repo, outside


def _shared(result: dict) -> list[str]:
    assert result["return"] == 0, result
    return sorted(e["alias"] for e in result["entries"] if e["repo"] == "shared")


def test_links_out_are_skipped_with_warnings_naming_them(linked_repo):
    repo, outside = linked_repo
    for _ in range(2):  # and again from the index: the warning stays until the link is fixed
        result = access({"action": "list", "module": "experiment"})
        assert _shared(result) == ["good"]
        warnings = "\n".join(result["warnings"])
        assert f"{repo / 'experiments/leak/meta.json'} is a symlink to {outside / 'meta.json'}" in warnings
        assert f"{repo / 'experiments/linked'} is a symlink to {outside / 'entry'}" in warnings
    result = access({"action": "list", "module": "platform"})
    assert _shared(result) == []
    assert any(str(repo / "platforms") in w and "outside repo shared" in w for w in result["warnings"])
    searched = access({"action": "search", "module": "experiment", "tags": "t"})
    assert _shared(searched) == ["good"]


@pytest.mark.parametrize("entry", ["leak", "linked"])
def test_load_cp_and_zip_do_not_follow_links_out(entry, linked_repo, tmp_path):
    repo, outside = linked_repo
    before = tree(outside)
    assert access({"action": "load", "module": "experiment", "entry": entry})["return"] == EXIT_NOT_FOUND
    result = access({"action": "cp", "module": "experiment", "entry": entry, "cids": [f"experiment:{entry}", "copy"]})
    assert result["return"] == EXIT_NOT_FOUND
    archive = tmp_path / "out.zip"
    result = access({"action": "zip", "module": "experiment", "entry": entry, "archive_name": str(archive)})
    assert result["return"] == EXIT_NOT_FOUND and not archive.exists()
    assert tree(outside) == before
    assert not (repo / "experiments/copy").exists()


def test_cp_and_zip_of_an_entry_leave_its_links_out_behind(linked_repo, tmp_path, ckx_home):
    repo, outside = linked_repo
    result = access({"action": "cp", "module": "experiment", "entry": "good", "cids": ["experiment:good", "good2"]})
    assert result["return"] == 0, result
    copied = Path(result["path"])
    assert (copied / "notes.txt").read_text() == "fine\n"
    assert not os.path.lexists(copied / "escape.txt")
    assert any("escape.txt" in w and "outside the entry" in w for w in result["warnings"])
    archive = tmp_path / "good.zip"
    result = access({"action": "zip", "module": "experiment", "entry": "good", "repo": "shared",
                     "archive_name": str(archive)})
    assert result["return"] == 0, result
    with zipfile.ZipFile(archive) as zf:
        assert sorted(zf.namelist()) == ["experiments/good/meta.json", "experiments/good/notes.txt"]
        assert all(SECRET.encode() not in zf.read(name) for name in zf.namelist())


def test_a_meta_swapped_for_a_link_after_indexing_is_not_loaded(linked_repo):
    repo, outside = linked_repo
    assert access({"action": "load", "module": "experiment", "entry": "good"})["return"] == 0
    target = repo / "experiments/good/meta.json"
    (outside / "swapped.json").write_text(meta("0000000000000e04", "good"))
    target.unlink()
    os.symlink(outside / "swapped.json", target)
    result = access({"action": "load", "module": "experiment", "entry": "good"})
    assert result["return"] == EXIT_NOT_FOUND, result
    assert any(str(target) in w for w in result["warnings"])


def test_links_that_stay_inside_the_repo_still_work(tmp_path, ckx_home):
    repo = tmp_path / "inner"
    assert access({"action": "add", "module": "repo", "entry": "inner", "path": str(repo)})["return"] == 0
    (repo / "store").mkdir()
    (repo / "store/meta.json").write_text(meta("0000000000000e05", "kept"))
    (repo / "experiments/kept").mkdir(parents=True)
    os.symlink(repo / "store/meta.json", repo / "experiments/kept/meta.json")
    result = access({"action": "list", "module": "experiment"})
    assert sorted(e["alias"] for e in result["entries"] if e["repo"] == "inner") == ["kept"]
    assert access({"action": "load", "module": "experiment", "entry": "kept"})["return"] == 0
