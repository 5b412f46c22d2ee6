"""Sharing: `ckx pull repo` from real git repositories on disk, and `ckx zip` / `ckx unzip` round trips."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import make_ck_repo
from httpserver import http_server  # noqa: F401  (the fixture)
from ckx.api import access
from ckx.sharing.catalog import load_catalog, url_for_alias
from gitenv import GIT_IDENTITY, hermetic_git  # noqa: F401  (the fixture keeps git hermetic)


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *GIT_IDENTITY, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def write_files(root: Path, files: dict[str, object]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content, indent=1))


def commit_all(root: Path, message: str) -> None:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)


def make_remote(root: Path, files: dict[str, object], *, branch: str = "main") -> str:
    """A git repository on disk with ``files`` committed; returns its file:// URL."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", branch)
    write_files(root, files)
    commit_all(root, "initial")
    return root.as_uri()


def native_repo_files(name: str, uid: str, entries: dict[str, list[str]], deps: list | None = None) -> dict[str, object]:
    files: dict[str, object] = {"ckx-repo.json": {"name": name, "uid": uid, "schema_version": 1, **({"deps": deps} if deps else {})}}
    for alias, tags in entries.items():
        files[f"experiments/{alias}/meta.json"] = {"uid": uid[:-2] + f"{len(files):02x}", "alias": alias, "tags": tags,
                                                   "schema_version": 1}
    return files


def experiment_meta(uid: str, alias: str, tags: list[str]) -> dict:
    return {"uid": uid, "alias": alias, "tags": tags, "schema_version": 1}


def ok(result: dict) -> dict:
    assert result["return"] == 0, result
    return result


def cids(result: dict) -> list[str]:
    """The CIDs found, without the built-in repo's own entries (they change as ckx grows)."""
    return sorted(e["cid"] for e in ok(result)["entries"] if e["repo"] != "builtin")


def repos_dir_listing(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "repos").iterdir())


def registered(home: Path) -> list[str]:
    path = home / "repos.json"
    return sorted(json.loads(path.read_text())["repos"]) if path.is_file() else []


# =========================================================================== pull


def test_pull_clones_registers_and_lists(tmp_path, ckx_home):
    url = make_remote(tmp_path / "remote", native_repo_files("team-results", "a0a0a0a0a0a0a000", {"e1": ["x", "y"]}))
    result = ok(access({"action": "pull", "module": "repo", "url": url}))
    assert result["repo"]["name"] == "team-results" and result["repo"]["state"] == "cloned"
    assert registered(ckx_home) == ["team-results"]
    assert repos_dir_listing(ckx_home) == ["local", "team-results"]  # no staging directory left
    assert cids(access({"action": "list", "module": "experiment"})) == ["team-results:experiment:e1"]
    repo = [r for r in ok(access({"action": "list", "module": "repo"}))["repos"] if r["name"] == "team-results"][0]
    assert repo["url"] == url and repo["format"] == "ckx"


def test_pull_with_alias_registers_under_that_name(tmp_path, ckx_home):
    url = make_remote(tmp_path / "remote", native_repo_files("other-name", "a1a1a1a1a1a1a100", {"e1": ["x"]}))
    result = ok(access({"action": "pull", "module": "repo", "entry": "mine", "url": url}))
    assert result["repo"]["name"] == "mine"
    assert (ckx_home / "repos" / "mine" / "ckx-repo.json").is_file()


def test_pull_again_fast_forwards(tmp_path):
    remote = tmp_path / "remote"
    url = make_remote(remote, native_repo_files("ff", "b0b0b0b0b0b0b000", {"e1": ["x"]}))
    ok(access({"action": "pull", "module": "repo", "url": url}))
    assert ok(access({"action": "pull", "module": "repo", "entry": "ff"}))["repo"]["state"] == "up-to-date"
    write_files(remote, {"experiments/e2/meta.json": experiment_meta("b0b0b0b0b0b0b0ff", "e2", ["x"])})
    commit_all(remote, "second")
    result = ok(access({"action": "pull", "module": "repo", "entry": "ff"}))
    assert result["repo"]["state"] == "updated"
    assert result["repo"]["commit"] == git(remote, "rev-parse", "--short", "HEAD")
    assert cids(access({"action": "list", "module": "experiment"})) == ["ff:experiment:e1", "ff:experiment:e2"]
    # the same URL again (without a name) updates the registered clone rather than cloning twice
    assert ok(access({"action": "pull", "module": "repo", "url": url}))["repo"]["state"] == "up-to-date"


def test_pull_diverged_repo_is_an_error(tmp_path, ckx_home):
    remote = tmp_path / "remote"
    url = make_remote(remote, native_repo_files("div", "c0c0c0c0c0c0c000", {"e1": ["x"]}))
    ok(access({"action": "pull", "module": "repo", "url": url}))
    clone = ckx_home / "repos" / "div"
    write_files(clone, {"local-note.txt": "mine"})
    commit_all(clone, "local change")
    write_files(remote, {"remote-note.txt": "theirs"})
    commit_all(remote, "remote change")
    result = access({"action": "pull", "module": "repo", "entry": "div"})
    assert result["return"] == 1
    assert "diverged" in result["error"] and "fast-forward" in result["error"]
    assert (clone / "local-note.txt").is_file() and not (clone / "remote-note.txt").exists()


def test_pull_of_a_registered_repo_from_another_url_is_refused(tmp_path):
    url = make_remote(tmp_path / "remote", native_repo_files("one", "c2c2c2c2c2c2c200", {"e1": ["x"]}))
    other = make_remote(tmp_path / "other", native_repo_files("two", "c3c3c3c3c3c3c300", {"e2": ["x"]}))
    ok(access({"action": "pull", "module": "repo", "url": url}))
    result = access({"action": "pull", "module": "repo", "entry": "one", "url": other})
    assert result["return"] == 2 and "was cloned from" in result["error"]


def test_pull_local_commits_ahead_is_not_an_error(tmp_path, ckx_home):
    url = make_remote(tmp_path / "remote", native_repo_files("ahead", "c1c1c1c1c1c1c100", {"e1": ["x"]}))
    ok(access({"action": "pull", "module": "repo", "url": url}))
    clone = ckx_home / "repos" / "ahead"
    write_files(clone, {"note.txt": "mine"})
    commit_all(clone, "local change")
    assert ok(access({"action": "pull", "module": "repo", "entry": "ahead"}))["repo"]["state"] == "ahead"


def test_pull_bad_url_registers_nothing_and_leaves_nothing(tmp_path, ckx_home):
    result = access({"action": "pull", "module": "repo", "entry": "ghost", "url": (tmp_path / "missing").as_uri()})
    assert result["return"] == 1
    assert "git clone" in result["error"]
    assert registered(ckx_home) == []
    assert repos_dir_listing(ckx_home) == ["local"]


def test_pull_timeout_leaves_nothing(tmp_path, ckx_home):
    url = make_remote(tmp_path / "remote", native_repo_files("slow", "c4c4c4c4c4c4c400", {"e1": ["x"]}))
    result = access({"action": "pull", "module": "repo", "url": url, "timeout": "0.001"})
    assert result["return"] == 1 and "timed out" in result["error"]
    assert registered(ckx_home) == [] and repos_dir_listing(ckx_home) == ["local"]
    assert access({"action": "pull", "module": "repo", "url": url, "timeout": "soon"})["return"] == 2


def test_pull_of_a_git_repo_that_is_no_ckx_repo_leaves_nothing(tmp_path, ckx_home):
    url = make_remote(tmp_path / "plain", {"README.md": "just code\n"})
    result = access({"action": "pull", "module": "repo", "url": url})
    assert result["return"] == 1 and "not a ckx or CK repo" in result["error"]
    assert registered(ckx_home) == [] and repos_dir_listing(ckx_home) == ["local"]


def test_pull_refuses_urls_git_would_take_for_options(ckx_home):
    for url in ("--upload-pack=touch /tmp/pwned", "ext::sh -c touch% /tmp/pwned", "relative/path"):
        result = access({"action": "pull", "module": "repo", "entry": "x", "url": url})
        assert result["return"] == 2, (url, result)
    assert registered(ckx_home) == []


def test_pull_unknown_alias_without_url_is_not_found(ckx_home):
    result = access({"action": "pull", "module": "repo", "entry": "no-such-alias"})
    assert result["return"] == 3
    assert "--url" in result["hint"] and "mlcommons@ck-mlops" in result["hint"]


def test_pull_branch(tmp_path):
    remote = tmp_path / "remote"
    url = make_remote(remote, native_repo_files("br", "d0d0d0d0d0d0d000", {"e1": ["x"]}))
    git(remote, "checkout", "-q", "-b", "dev")
    write_files(remote, {"experiments/dev-only/meta.json": experiment_meta("d0d0d0d0d0d0d0ff", "dev-only", ["x"])})
    commit_all(remote, "dev work")
    git(remote, "checkout", "-q", "main")
    ok(access({"action": "pull", "module": "repo", "url": url, "branch": "dev"}))
    assert "br:experiment:dev-only" in cids(access({"action": "list", "module": "experiment"}))
    assert access({"action": "pull", "module": "repo", "url": url, "entry": "x", "branch": "-bad"})["return"] == 2


def test_pull_runs_no_hooks(tmp_path, ckx_home, monkeypatch):
    """A post-checkout hook from a git template directory must not run on a pulled repo."""
    marker = tmp_path / "hook-ran"
    template = tmp_path / "template"
    hook = template / "hooks" / "post-checkout"
    hook.parent.mkdir(parents=True)
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    monkeypatch.setenv("GIT_TEMPLATE_DIR", str(template))
    url = make_remote(tmp_path / "remote", native_repo_files("hooked", "e0e0e0e0e0e0e000", {"e1": ["x"]}))
    marker.unlink(missing_ok=True)  # git init above used the template too (and has no checkout)
    ok(access({"action": "pull", "module": "repo", "url": url}))
    assert not marker.exists()
    assert not any((ckx_home / "repos" / "hooked" / ".git" / "hooks").glob("post-checkout"))


def test_pull_pulls_declared_dependencies(tmp_path, ckx_home):
    """native A declares B (with its URL); CK-format B declares C in .ckr.json repo_deps: all three come."""
    c_url = make_remote(tmp_path / "c", native_repo_files("dep-c", "f2f2f2f2f2f2f200", {"c1": ["c"]}))
    b_root = make_ck_repo(tmp_path / "b", "dep-b", {"package": [("pkg-b", "f1f1f1f1f1f1f101", {"tags": ["b"]})]})
    ckr = json.loads((b_root / ".ckr.json").read_text())
    ckr["dict"]["repo_deps"] = [{"repo_uoa": "dep-c", "repo_url": c_url}]
    (b_root / ".ckr.json").write_text(json.dumps(ckr))
    git(b_root, "init", "-q", "-b", "main")
    commit_all(b_root, "ck repo")
    a_url = make_remote(tmp_path / "a", native_repo_files("top-a", "f0f0f0f0f0f0f000", {"a1": ["a"]},
                                                           deps=[{"name": "dep-b", "url": b_root.as_uri()}]))
    result = ok(access({"action": "pull", "module": "repo", "url": a_url}))
    assert [(d["name"], d["state"], d["dependency_of"]) for d in result["deps"]] == [
        ("dep-b", "cloned", "top-a"), ("dep-c", "cloned", "dep-b")]
    assert registered(ckx_home) == ["dep-b", "dep-c", "top-a"]
    assert cids(access({"action": "search", "tags": "b"})) == ["dep-b:package:pkg-b"]
    # pulling again: deps already registered are listed as present, nothing is cloned twice
    again = ok(access({"action": "pull", "module": "repo", "entry": "top-a"}))
    assert [d["state"] for d in again["deps"]] == ["present", "present"]


def test_pull_dependency_failure_is_a_warning(tmp_path, ckx_home):
    a_url = make_remote(tmp_path / "a", native_repo_files("top", "f3f3f3f3f3f3f300", {"a1": ["a"]},
                                                           deps=[{"name": "gone", "url": (tmp_path / "gone").as_uri()}]))
    result = ok(access({"action": "pull", "module": "repo", "url": a_url}))
    assert result["failed_deps"] == ["gone"]
    assert any("gone" in w for w in result["warnings"])
    assert registered(ckx_home) == ["top"]
    assert repos_dir_listing(ckx_home) == ["local", "top"]


CK_ENTRIES = {
    "package": [
        ("ml-model-mlperf-resnet50-onnx", "0a1b2c3d4e5f6071",
         {"tags": ["ml-model", "model", "onnx", "resnet50", "mlperf"], "install_env": {"ML_MODEL_DATA_LAYOUT": "NCHW"}}),
        (None, "2a1b2c3d4e5f6071", {"tags": ["lib", "python-package", "numpy"]}),
    ],
    "soft": [("dataset.imagenet.val", "3a1b2c3d4e5f6071", {"tags": ["dataset", "imagenet", "val"]})],
}


def test_pulled_ck_repo_is_listable_searchable_loadable(tmp_path, ckx_home):
    root = make_ck_repo(tmp_path / "ck-remote", "octo@ck-mini", CK_ENTRIES)
    git(root, "init", "-q", "-b", "main")
    commit_all(root, "ck repo")
    result = ok(access({"action": "pull", "module": "repo", "url": root.as_uri()}))
    assert result["repo"]["name"] == "octo@ck-mini" and result["repo"]["format"] == "ck"
    assert cids(access({"action": "list", "module": "package"})) == [
        "octo@ck-mini:package:2a1b2c3d4e5f6071", "octo@ck-mini:package:ml-model-mlperf-resnet50-onnx"]
    assert cids(access({"action": "search", "module": "package", "tags": "model,onnx,-numpy"})) == [
        "octo@ck-mini:package:ml-model-mlperf-resnet50-onnx"]
    loaded = ok(access({"action": "load", "module": "package", "entry": "ml-model-mlperf-resnet50-onnx"}))
    assert loaded["uid"] == "0a1b2c3d4e5f6071" and loaded["meta"]["install_env"] == {"ML_MODEL_DATA_LAYOUT": "NCHW"}
    assert ok(access({"action": "load", "module": "package", "entry": "2a1b2c3d4e5f6071"}))["meta"]["tags"][-1] == "numpy"


def test_pull_by_catalog_alias(tmp_path, ckx_home, monkeypatch):
    """An alias known to the catalog (repos/catalog.json of the built-in repo) needs no --url."""
    url = make_remote(tmp_path / "remote", native_repo_files("whatever", "a2a2a2a2a2a2a200", {"e1": ["x"]}))
    builtin = tmp_path / "builtin"
    write_files(builtin, {"ckx-repo.json": {"name": "builtin", "uid": "00000000000000b1", "schema_version": 1},
                          "repos/catalog.json": {"schema_version": 1, "repos": {
                              "team@results": {"url": url, "format": "ckx", "aliases": ["results"]}}}})
    monkeypatch.setenv("CKX_BUILTIN_REPO", str(builtin))
    result = ok(access({"action": "pull", "module": "repo", "entry": "results"}))
    assert result["repo"]["name"] == "results" and result["repo"]["url"] == url
    assert registered(ckx_home) == ["results"]


def test_catalog_file_maps_known_ck_repos():
    catalog = load_catalog()
    assert url_for_alias("mlcommons@ck-mlops", catalog)[0] == "https://github.com/mlcommons/ck-mlops"
    assert url_for_alias("ck-env", catalog)[0] == "https://github.com/ctuning/ck-env"
    assert url_for_alias("ctuning@ck-env", catalog)[0] == "https://github.com/ctuning/ck-env"
    # CK's owner@name rule for anything else on GitHub; a bare unknown name has no URL
    assert url_for_alias("someone@their-repo", catalog)[0] == "https://github.com/someone/their-repo"
    assert url_for_alias("unknown-name", catalog) is None


def test_bad_catalog_is_a_meta_error(tmp_path, monkeypatch):
    builtin = tmp_path / "builtin"
    write_files(builtin, {"ckx-repo.json": {"name": "builtin", "uid": "00000000000000b1", "schema_version": 1},
                          "repos/catalog.json": {"schema_version": 99, "repos": {}}})
    monkeypatch.setenv("CKX_BUILTIN_REPO", str(builtin))
    result = access({"action": "pull", "module": "repo", "entry": "x"})
    assert result["return"] == 1 and "schema_version" in result["error"]


def test_pull_of_a_repo_that_is_no_git_checkout(ckx_home):
    ok(access({"action": "add", "module": "repo", "entry": "plain"}))
    result = access({"action": "pull", "module": "repo", "entry": "plain"})
    assert result["return"] == 2 and "not a git checkout" in result["error"]


def test_pull_cli(tmp_path, cli):
    url = make_remote(tmp_path / "remote", native_repo_files("via-cli", "a3a3a3a3a3a3a300", {"e1": ["x"]}))
    proc = cli("pull", "repo", f"--url={url}")
    assert proc.returncode == 0, proc.stderr
    assert "via-cli: cloned" in proc.stdout
    proc = cli("pull", "repo:nothing-known")
    assert proc.returncode == 3 and "error: no known URL" in proc.stderr


# =========================================================================== zip / unzip


def add_experiment(alias: str, *, repo: str = "local", tags: str = "bench", uid: str | None = None) -> dict:
    request = {"action": "add", "module": "experiment", "entry": alias, "repo": repo, "tags": tags}
    if uid:
        request["uid"] = uid
    return ok(access(request))


def use_home(monkeypatch, path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("CKX_HOME", str(path))
    return path


def test_zip_single_entry_round_trip(tmp_path, ckx_home, monkeypatch):
    entry = add_experiment("resnet-run", uid="1234567890abcdef")
    points = Path(entry["path"]) / "points"
    points.mkdir()
    (points / "p1.json").write_text('{"latency": 1.5}\n')
    archive = tmp_path / "one.zip"
    result = ok(access({"action": "zip", "module": "experiment", "entry": "resnet-run", "archive_name": str(archive)}))
    assert result["archive"] == str(archive) and result["entries"] == ["local:experiment:resnet-run"]
    assert sorted(zipfile.ZipFile(archive).namelist()) == ["experiments/resnet-run/meta.json",
                                                           "experiments/resnet-run/points/p1.json"]
    home2 = use_home(monkeypatch, tmp_path / "home2")
    unzipped = ok(access({"action": "unzip", "module": "repo", "zip": str(archive)}))
    assert unzipped["repo"] == "local" and unzipped["extracted"] == ["experiment:resnet-run"]
    loaded = ok(access({"action": "load", "module": "experiment", "entry": "resnet-run"}))
    assert loaded["uid"] == "1234567890abcdef" and loaded["repo"] == "local"
    assert (home2 / "repos/local/experiments/resnet-run/points/p1.json").read_text() == '{"latency": 1.5}\n'


def test_zip_all_matching_entries(tmp_path, monkeypatch):
    for alias in ("a", "b", "c"):
        add_experiment(alias)
    archive = tmp_path / "all.zip"
    result = ok(access({"action": "zip", "cids": ["experiment:*"], "module": "experiment", "entry": "*",
                        "archive_name": str(archive)}))
    assert len(result["entries"]) == 3
    by_tags = ok(access({"action": "zip", "module": "experiment", "tags": "bench", "archive_name": str(tmp_path / "t.zip")}))
    assert by_tags["entries"] == result["entries"]
    use_home(monkeypatch, tmp_path / "home2")
    ok(access({"action": "unzip", "module": "repo", "zip": str(archive)}))
    assert cids(access({"action": "list", "module": "experiment"})) == [
        "local:experiment:a", "local:experiment:b", "local:experiment:c"]


def test_zip_default_and_auto_names_in_the_current_directory(tmp_path, monkeypatch):
    add_experiment("x")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert ok(access({"action": "zip", "module": "experiment", "entry": "x"}))["archive"] == str(work / "ckr.zip")
    auto = Path(ok(access({"action": "zip", "module": "experiment", "entry": "x", "auto_name": True}))["archive"])
    assert auto.parent == work and auto.name.startswith("ckr-local-experiment-") and auto.suffix == ".zip"
    assert access({"action": "zip", "module": "experiment", "entry": "x", "auto_name": True,
                   "archive_name": "a.zip"})["return"] == 2


def test_zip_unhappy_paths(tmp_path):
    assert access({"action": "zip", "module": "experiment", "entry": "none-such"})["return"] == 3
    assert access({"action": "zip", "module": "experiment", "entry": "n*", "archive_name": str(tmp_path / "z.zip")})["return"] == 3
    result = access({"action": "zip", "module": "experiment"})
    assert result["return"] == 2 and "experiment:*" in result["hint"]
    assert access({"action": "zip", "module": "repo", "entry": "unregistered"})["return"] == 3


def test_zip_leaves_symlinks_out(tmp_path):
    entry = add_experiment("linky")
    secret = tmp_path / "secret.txt"
    secret.write_text("do not ship")
    os.symlink(secret, Path(entry["path"]) / "leak.txt")
    archive = tmp_path / "l.zip"
    result = ok(access({"action": "zip", "module": "experiment", "entry": "linky", "archive_name": str(archive)}))
    assert zipfile.ZipFile(archive).namelist() == ["experiments/linky/meta.json"]
    assert any("symlink" in w for w in result["warnings"])


def test_seed_workflow_whole_repo_to_another_home(tmp_path, cli, monkeypatch):
    """add repo, add experiments into it, zip the repo; on another home unzip it: the entries are there."""
    assert cli("add", "repo:my-cool-experiments", "--quiet").returncode == 0
    for name in ("resnet50-onnx", "resnet50-torch"):
        proc = cli("add", f"experiment:{name}", "--repo=my-cool-experiments", "--tags=mlperf,bench")
        assert proc.returncode == 0, proc.stderr
    work = tmp_path / "work"
    work.mkdir()
    proc = cli("zip", "repo:my-cool-experiments", cwd=work)
    assert proc.returncode == 0, proc.stderr
    names = zipfile.ZipFile(work / "ckr-my-cool-experiments.zip").namelist()
    assert "ckx-repo.json" in names and "experiments/resnet50-onnx/meta.json" in names
    home2 = tmp_path / "machine2"
    proc = subprocess.run([sys.executable, "-m", "ckx", "unzip", "repo", f"--zip={work / 'ckr-my-cool-experiments.zip'}"],
                          env={**os.environ, "CKX_HOME": str(home2), "PYTHONPATH": str(Path(__file__).parent.parent)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "created and registered repo my-cool-experiments" in proc.stdout
    use_home(monkeypatch, home2)
    assert cids(access({"action": "search", "module": "experiment", "tags": "mlperf"})) == [
        "my-cool-experiments:experiment:resnet50-onnx", "my-cool-experiments:experiment:resnet50-torch"]
    assert "my-cool-experiments" in registered(home2)


def ck_repo_registered(tmp_path: Path) -> Path:
    root = make_ck_repo(tmp_path / "ck-src", "ctuning@ck-mini", CK_ENTRIES)
    ok(access({"action": "add", "module": "repo", "entry": "ckmini", "path": str(root)}))
    return root


def test_zip_ck_entry_carries_alias_files_and_converts_into_a_native_repo(tmp_path, monkeypatch):
    ck_repo_registered(tmp_path)
    archive = tmp_path / "ck-entry.zip"
    ok(access({"action": "zip", "module": "package", "entry": "ml-model-mlperf-resnet50-onnx", "archive_name": str(archive)}))
    names = sorted(zipfile.ZipFile(archive).namelist())
    assert names == [
        ".cm/alias-a-package", ".cm/alias-u-1dc07ee0f4742028",
        "package/.cm/alias-a-ml-model-mlperf-resnet50-onnx", "package/.cm/alias-u-0a1b2c3d4e5f6071",
        "package/ml-model-mlperf-resnet50-onnx/.cm/desc.json", "package/ml-model-mlperf-resnet50-onnx/.cm/info.json",
        "package/ml-model-mlperf-resnet50-onnx/.cm/meta.json",
    ]
    home2 = use_home(monkeypatch, tmp_path / "home2")
    refused = access({"action": "unzip", "module": "repo", "zip": str(archive)})  # a package carries code
    assert refused["return"] == 2 and "--allow_code" in refused["hint"] and "package:ml-model-mlperf-resnet50-onnx" in refused["error"]
    ok(access({"action": "unzip", "module": "repo", "zip": str(archive), "allow_code": True}))
    loaded = ok(access({"action": "load", "module": "package", "entry": "ml-model-mlperf-resnet50-onnx"}))
    assert loaded["repo"] == "local" and loaded["uid"] == "0a1b2c3d4e5f6071"
    assert loaded["meta"]["install_env"] == {"ML_MODEL_DATA_LAYOUT": "NCHW"}
    assert (home2 / "repos/local/packages/ml-model-mlperf-resnet50-onnx/meta.json").is_file()
    assert not (home2 / "repos/local/package").exists()


def test_zip_whole_ck_repo_round_trip(tmp_path, monkeypatch):
    ck_repo_registered(tmp_path)
    archive = tmp_path / "ck-repo.zip"
    ok(access({"action": "zip", "module": "repo", "entry": "ckmini", "archive_name": str(archive)}))
    assert ".ckr.json" in zipfile.ZipFile(archive).namelist()
    use_home(monkeypatch, tmp_path / "home2")
    result = ok(access({"action": "unzip", "module": "repo", "zip": str(archive)}))
    assert result["created"] and result["repo"] == "ctuning@ck-mini"
    repo = [r for r in ok(access({"action": "list", "module": "repo"}))["repos"] if r["name"] == "ctuning@ck-mini"][0]
    assert repo["format"] == "ck"
    assert cids(access({"action": "search", "module": "soft", "tags": "imagenet"})) == [
        "ctuning@ck-mini:soft:dataset.imagenet.val"]


def test_unzip_whole_repo_under_a_given_name(tmp_path, monkeypatch):
    ok(access({"action": "add", "module": "repo", "entry": "src-repo"}))
    add_experiment("e", repo="src-repo")
    archive = tmp_path / "r.zip"
    ok(access({"action": "zip", "module": "repo", "entry": "src-repo", "archive_name": str(archive)}))
    use_home(monkeypatch, tmp_path / "home2")
    result = ok(access({"action": "unzip", "module": "repo", "entry": "renamed", "zip": str(archive)}))
    assert result["created"] and result["repo"] == "renamed"
    assert cids(access({"action": "list", "module": "experiment"})) == ["renamed:experiment:e"]


def test_unzip_into_a_named_registered_repo(tmp_path):
    add_experiment("moving")
    archive = tmp_path / "m.zip"
    ok(access({"action": "zip", "module": "experiment", "entry": "moving", "archive_name": str(archive)}))
    ok(access({"action": "rm", "module": "experiment", "entry": "moving", "force": True}))
    ok(access({"action": "add", "module": "repo", "entry": "target"}))
    result = ok(access({"action": "unzip", "module": "repo", "entry": "target", "zip": str(archive)}))
    assert result["repo"] == "target"
    assert cids(access({"action": "list", "module": "experiment"})) == ["target:experiment:moving"]


def test_unzip_refuses_ck_format_targets_and_unknown_repos(tmp_path, monkeypatch):
    ck_repo_registered(tmp_path)
    add_experiment("e")
    archive = tmp_path / "e.zip"
    ok(access({"action": "zip", "module": "experiment", "entry": "e", "archive_name": str(archive)}))
    result = access({"action": "unzip", "module": "repo", "entry": "ckmini", "zip": str(archive)})
    assert result["return"] == 2 and "CK's format" in result["error"]
    result = access({"action": "unzip", "module": "repo", "entry": "nowhere", "zip": str(archive)})
    assert result["return"] == 3
    assert access({"action": "unzip", "module": "repo", "zip": str(tmp_path / "missing.zip")})["return"] == 3
    monkeypatch.chdir(tmp_path)
    result = access({"action": "unzip", "module": "repo"})  # CK's default: ./ckr.zip, which is not there
    assert result["return"] == 3 and "no --zip given and no ckr.zip" in result["error"]


def test_unzip_overwrite_semantics(tmp_path):
    entry = add_experiment("kept", uid="aaaaaaaaaaaaaaaa")
    meta_path = Path(entry["path"]) / "meta.json"
    archive = tmp_path / "k.zip"
    ok(access({"action": "zip", "module": "experiment", "entry": "kept", "archive_name": str(archive)}))
    original = meta_path.read_text()
    edited = json.loads(original)
    edited["tags"] = ["edited"]
    meta_path.write_text(json.dumps(edited))
    (Path(entry["path"]) / "extra.txt").write_text("local only")

    result = ok(access({"action": "unzip", "module": "repo", "zip": str(archive)}))
    assert result["skipped"] == ["experiment:kept"] and result["extracted"] == [] and result["files"] == 0
    assert json.loads(meta_path.read_text())["tags"] == ["edited"]

    result = ok(access({"action": "unzip", "module": "repo", "zip": str(archive), "overwrite": "yes"}))
    assert result["overwritten"] == ["experiment:kept"] and result["skipped"] == [] and result["clashes"] == []
    # the archive's meta, marked as having come from that archive
    replaced = json.loads(meta_path.read_text())
    assert replaced.pop("provenance") == {"origin": "unzipped", "source": archive.name}
    assert replaced == json.loads(original)
    assert (Path(entry["path"]) / "extra.txt").read_text() == "local only"
    assert cids(access({"action": "search", "module": "experiment", "tags": "bench"})) == ["local:experiment:kept"]


def test_unzip_reports_uid_clashes_across_repos(tmp_path, monkeypatch):
    add_experiment("original", uid="bbbbbbbbbbbbbbbb")
    archive = tmp_path / "o.zip"
    ok(access({"action": "zip", "module": "experiment", "entry": "original", "archive_name": str(archive)}))
    ok(access({"action": "add", "module": "repo", "entry": "second"}))
    result = ok(access({"action": "unzip", "module": "repo", "entry": "second", "zip": str(archive)}))
    assert result["extracted"] == ["experiment:original"]
    assert result["clashes"] and "local:experiment:original" in result["clashes"][0]
    assert any("bbbbbbbbbbbbbbbb" in w and "local:experiment:original" in w for w in result["warnings"])


def test_unzip_from_a_url(tmp_path, monkeypatch, http_server):  # noqa: F811
    add_experiment("remote-one")
    archive = tmp_path / "u.zip"
    ok(access({"action": "zip", "module": "experiment", "entry": "remote-one", "archive_name": str(archive)}))
    url = http_server.put("shared/u.zip", archive.read_bytes())
    home2 = use_home(monkeypatch, tmp_path / "home2")
    ok(access({"action": "unzip", "module": "repo", "zip": url}))
    assert cids(access({"action": "list", "module": "experiment"})) == ["local:experiment:remote-one"]
    assert not any((home2 / "cache").rglob("u.zip"))  # the download is not kept
    result = access({"action": "unzip", "module": "repo", "zip": http_server.url_for("shared/missing.zip")})
    assert result["return"] == 1 and "404" in result["error"]


def test_unzip_of_a_file_that_is_no_zip(tmp_path):
    bogus = tmp_path / "bogus.zip"
    bogus.write_bytes(b"<html>not found</html>")
    assert access({"action": "unzip", "module": "repo", "zip": str(bogus)})["return"] == 5



# ---------------------------------------------------------------- unsafe archives: nothing is written


def build_zip(path: Path, members: list[tuple[str, bytes, int | None]]) -> Path:
    """A zip with raw member names; the third field is a unix mode (None: a plain file)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.create_system = 3
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


GOOD = ("experiments/fine/meta.json", json.dumps(experiment_meta("cccccccccccccccc", "fine", ["ok"])).encode(), None)


@pytest.mark.parametrize("member", [
    ("../evil.txt", b"x", None),
    ("experiments/../../evil.txt", b"x", None),
    ("/tmp/evil-absolute.txt", b"x", None),
    ("..\\evil.txt", b"x", None),
    ("C:/evil.txt", b"x", None),
    ("experiments/link/meta.json", b"/etc/passwd", stat.S_IFLNK | 0o777),
    (".git/hooks/post-checkout", b"#!/bin/sh\n", None),
    ("experiments/fifo", b"", stat.S_IFIFO | 0o644),
], ids=["dotdot", "nested-dotdot", "absolute", "backslash", "drive", "symlink", "dot-git", "fifo"])
def test_unsafe_archives_are_refused_before_anything_is_written(tmp_path, ckx_home, member):
    archive = build_zip(tmp_path / "evil.zip", [GOOD, member])
    local = ckx_home / "repos" / "local"
    access({"action": "list", "module": "experiment"})  # create the local repo first
    before = sorted(str(p) for p in local.rglob("*"))
    result = access({"action": "unzip", "module": "repo", "zip": str(archive)})
    assert result["return"] == 5, result
    assert "nothing was written" in result["hint"]
    assert sorted(str(p) for p in local.rglob("*")) == before
    assert not (tmp_path / "evil.txt").exists() and not (ckx_home / "repos" / "evil.txt").exists()
    assert not Path("/tmp/evil-absolute.txt").exists()


def test_duplicate_members_are_refused(tmp_path):
    archive = tmp_path / "dup.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(GOOD[0], GOOD[1])
        with pytest.warns(UserWarning):
            zf.writestr(GOOD[0], b"second")
    assert access({"action": "unzip", "module": "repo", "zip": str(archive)})["return"] == 5


def test_unzip_refuses_writing_through_a_symlink_on_disk(tmp_path, ckx_home):
    access({"action": "list", "module": "experiment"})
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, ckx_home / "repos" / "local" / "experiments")
    archive = build_zip(tmp_path / "ok.zip", [GOOD])
    result = access({"action": "unzip", "module": "repo", "zip": str(archive)})
    assert result["return"] == 5 and "symlink" in result["error"]
    assert list(outside.iterdir()) == []


def test_unsafe_archive_exit_code_on_the_command_line(tmp_path, cli, ckx_home):
    archive = build_zip(tmp_path / "evil.zip", [GOOD, ("../../evil.txt", b"x", None)])
    proc = cli("unzip", "repo", f"--zip={archive}")
    assert proc.returncode == 5
    assert "error: refusing to unzip" in proc.stderr and "'../../evil.txt'" in proc.stderr
    assert not (ckx_home / "repos" / "local" / "experiments" / "fine").exists()
