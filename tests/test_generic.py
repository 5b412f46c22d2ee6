"""Generic actions on native and CK-format repos side by side, through access() and the CLI."""
from __future__ import annotations

import json

import pytest

import ckx
from ckx.api import access

CK_ENTRIES = {
    "package": [
        ("ml-model-mlperf-resnet50-onnx", "0a1b2c3d4e5f6071",
         {"tags": ["ml-model", "model", "onnx", "resnet50", "mlperf"], "customize": {"version": "1.5"},
          "soft_uoa#": "model.onnx", "install_env": {"ML_MODEL_DATA_LAYOUT": "NCHW"}}),
        ("imagenet-2012-val-min", "1a1b2c3d4e5f6071",
         {"tags": ["dataset", "imagenet", "2012", "val", "min"], "install_env": {"COUNT": "500"}}),
        (None, "2a1b2c3d4e5f6071", {"tags": ["lib", "python-package", "numpy"]}),
    ],
    "soft": [
        ("dataset.imagenet.val", "3a1b2c3d4e5f6071", {"tags": ["dataset", "imagenet", "val"], "env_prefix": "CK_ENV_DATASET_IMAGENET_VAL"}),
    ],
}


@pytest.fixture
def repos(ck_repo_factory, tmp_path, monkeypatch):
    """A native repo and a CK-format repo, both registered, with overlapping vocabularies.

    The built-in repo is replaced by an empty one so that counts here do not depend on it.
    """
    empty = tmp_path / "empty-builtin"
    empty.mkdir()
    (empty / "ckx-repo.json").write_text('{"name": "builtin", "uid": "00000000000000b1", "schema_version": 1}')
    monkeypatch.setenv("CKX_BUILTIN_REPO", str(empty))
    ck_root = ck_repo_factory("ck-mlops-mini", CK_ENTRIES)
    assert access({"action": "add", "module": "repo", "entry": "ckrepo", "path": str(ck_root)})["return"] == 0
    native = tmp_path / "native"
    assert access({"action": "add", "module": "repo", "entry": "mine", "path": str(native)})["return"] == 0
    for alias, tags in [("resnet50-onnx-local", "model,onnx,resnet50,local"), ("bert", "model,onnx,bert"),
                        ("numpy-native", "lib,python-package,numpy")]:
        result = access({"action": "add", "module": "package", "entry": alias, "repo": "mine", "tags": tags,
                         "meta": {"name": alias, "source": {"kind": "hook"}}})
        assert result["return"] == 0, result
    return {"ck": ck_root, "native": native}


def names(result):
    assert result["return"] == 0, result
    return sorted(e["cid"] for e in result["entries"] if e["repo"] in ("mine", "ckrepo"))


def test_search_by_tags_across_formats(repos):
    result = access({"action": "search", "module": "package", "tags": "model,onnx,resnet50"})
    assert names(result) == ["ckrepo:package:ml-model-mlperf-resnet50-onnx", "mine:package:resnet50-onnx-local"]


def test_tag_exclusion(repos):
    result = access({"action": "search", "module": "package", "tags": "model,onnx,-resnet50"})
    assert names(result) == ["mine:package:bert"]


def test_search_across_all_modules(repos):
    result = access({"action": "search", "tags": "imagenet"})
    assert names(result) == ["ckrepo:package:imagenet-2012-val-min", "ckrepo:soft:dataset.imagenet.val"]


def test_search_string_wildcard_over_meta_values(repos):
    result = access({"action": "search", "module": "package", "search_string": "*NCHW*"})
    assert names(result) == ["ckrepo:package:ml-model-mlperf-resnet50-onnx"]


def test_search_dict_deep_subset(repos):
    result = access({"action": "search", "module": "package",
                     "search_dict": {"install_env": {"COUNT": "500"}, "tags": ["min"]}})
    assert names(result) == ["ckrepo:package:imagenet-2012-val-min"]
    result = access({"action": "search", "module": "package", "search_dict": {"install_env": {"COUNT": "501"}}})
    assert names(result) == []


def test_ck_entry_without_alias_is_named_by_uid(repos):
    result = access({"action": "load", "module": "package", "entry": "2a1b2c3d4e5f6071"})
    assert result["return"] == 0 and result["alias"] is None and result["meta"]["tags"][-1] == "numpy"
    assert result["path"].endswith("2a1b2c3d4e5f6071")


def test_load_find_path_by_alias_and_uid_in_both_formats(repos):
    ck = access({"action": "load", "module": "package", "entry": "ml-model-mlperf-resnet50-onnx"})
    assert ck["uid"] == "0a1b2c3d4e5f6071" and ck["meta"]["soft_uoa#"] == "model.onnx"
    by_uid = access({"action": "find", "module": "package", "entry": "0a1b2c3d4e5f6071"})
    assert by_uid["path"] == ck["path"]
    native = access({"action": "load", "module": "package", "entry": "bert"})
    assert native["meta"]["alias"] == "bert" and native["repo"] == "mine"
    found = access({"action": "path", "module": "package", "entry": native["uid"]})
    assert found["path"] == str(repos["native"] / "packages" / "bert")


def test_list_with_wildcards(repos):
    result = access({"action": "list", "module": "package", "entry": "*resnet50*"})
    assert names(result) == ["ckrepo:package:ml-model-mlperf-resnet50-onnx", "mine:package:resnet50-onnx-local"]
    result = access({"action": "list", "module": "package", "entry": "numpy-nativ?"})
    assert names(result) == ["mine:package:numpy-native"]
    result = access({"action": "list", "module": "package", "repo": "ckrepo"})
    assert len(result["entries"]) == 3


def test_list_tags(repos):
    result = access({"action": "list_tags", "module": "package"})
    assert result["tags"]["onnx"] == 3 and result["tags"]["numpy"] == 2


def test_ambiguous_name_lists_candidates(repos):
    access({"action": "add", "module": "package", "entry": "bert", "tags": "x", "meta": {"source": {"kind": "hook"}}})
    result = access({"action": "load", "module": "package", "entry": "bert"})
    assert result["return"] == 3
    assert len(result["candidates"]) == 2
    assert "mine:package:bert" in result["error"] and "local:package:bert" in result["error"]
    assert access({"action": "load", "module": "package", "entry": "bert", "repo": "mine"})["return"] == 0


def test_not_found_is_exit_3(repos):
    result = access({"action": "load", "module": "package", "entry": "does-not-exist"})
    assert result["return"] == 3 and "hint" in result


def test_alias_clash_on_add_names_existing_entry(repos):
    result = access({"action": "add", "module": "package", "entry": "bert", "repo": "mine", "tags": "y",
                     "meta": {"source": {"kind": "hook"}}})
    assert result["return"] == 1
    assert "bert" in result["error"] and str(repos["native"]) in result["error"]


def test_add_validates_meta_naming_file_and_field(repos):
    result = access({"action": "add", "module": "package", "entry": "badsrc", "meta": {"source": {"kind": "ftp"}}})
    assert result["return"] == 1
    assert "badsrc/meta.json" in result["error"] and "source.kind" in result["error"]


def test_rm_needs_force_without_tty_and_removes_with_it(repos):
    result = access({"action": "rm", "module": "package", "entry": "bert"})
    assert result["return"] == 2 and "--force" in result["hint"]
    assert (repos["native"] / "packages" / "bert").is_dir()
    result = access({"action": "rm", "module": "package", "entry": "bert", "force": True})
    assert result["return"] == 0
    assert not (repos["native"] / "packages" / "bert").exists()
    assert access({"action": "load", "module": "package", "entry": "bert"})["return"] == 3


def test_rm_by_wildcard_and_tags(repos):
    result = access({"action": "rm", "module": "package", "repo": "mine", "tags": "onnx", "force": True})
    assert sorted(r["alias"] for r in result["removed"]) == ["bert", "resnet50-onnx-local"]


def test_ck_format_repo_is_not_modified(repos):
    before = sorted(p.name for p in (repos["ck"] / "package").iterdir())
    result = access({"action": "rm", "module": "package", "entry": "imagenet-2012-val-min", "force": True})
    assert result["return"] == 2
    assert sorted(p.name for p in (repos["ck"] / "package").iterdir()) == before


def test_ren_within_repo_keeps_uid(repos):
    uid = access({"action": "load", "module": "package", "entry": "bert"})["uid"]
    result = access({"action": "ren", "module": "package", "entry": "bert", "cids": ["package:bert", "bert-large"]})
    assert result["return"] == 0 and result["uid"] == uid and result["alias"] == "bert-large"
    assert (repos["native"] / "packages" / "bert-large" / "meta.json").is_file()
    assert json.loads((repos["native"] / "packages" / "bert-large" / "meta.json").read_text())["alias"] == "bert-large"
    assert access({"action": "load", "module": "package", "entry": "bert"})["return"] == 3


def test_mv_across_repos_keeps_uid_and_files(repos):
    (repos["native"] / "packages" / "bert" / "README.md").write_text("hello")
    uid = access({"action": "load", "module": "package", "entry": "bert"})["uid"]
    result = access({"action": "mv", "module": "package", "entry": "bert", "cids": ["package:bert", "local:package:bert"]})
    assert result["return"] == 0 and result["repo"] == "local" and result["uid"] == uid
    assert not (repos["native"] / "packages" / "bert").exists()
    moved = access({"action": "find", "module": "package", "entry": "bert"})
    assert moved["repo"] == "local"
    assert (moved and __import__("pathlib").Path(moved["path"], "README.md").read_text() == "hello")


def test_cp_from_ck_repo_into_native(repos):
    result = access({"action": "cp", "module": "package", "entry": "imagenet-2012-val-min",
                     "cids": ["package:imagenet-2012-val-min", "local:package:imagenet-copy"]})
    assert result["return"] == 0, result
    assert result["uid"] != "1a1b2c3d4e5f6071"
    copy = access({"action": "load", "module": "package", "entry": "imagenet-copy"})
    assert copy["meta"]["install_env"] == {"COUNT": "500"} and copy["meta"]["schema_version"] == 1
    assert copy["meta"]["tags"] == ["dataset", "imagenet", "2012", "val", "min"]


def test_unknown_module_and_action(repos):
    assert access({"action": "list", "module": "nosuchmodule"})["return"] == 2
    assert access({"action": "frobnicate", "module": "package"})["return"] == 2


def test_access_accepts_ck_keys(repos):
    result = ckx.access({"action": "load", "module_uoa": "package", "data_uoa": "bert", "repo_uoa": "mine"})
    assert result["return"] == 0 and result["alias"] == "bert"
    result = ckx.access({"action": "load", "cid": "mine:package:bert"})
    assert result["return"] == 0


def test_access_refuses_path_tricks(repos):
    assert ckx.access({"action": "load", "module": "package", "entry": "../../etc"})["return"] == 2
    assert ckx.access({"action": "load", "cid": "package:../x"})["return"] == 2


def test_list_repo_and_rm_repo(repos, tmp_path):
    listed = access({"action": "list", "module": "repo"})
    assert {"builtin", "local", "ckrepo", "mine"} <= {r["name"] for r in listed["repos"]}
    assert access({"action": "rm", "module": "repo", "entry": "ckrepo"})["return"] == 0
    assert repos["ck"].is_dir()  # files kept without --all
    assert names(access({"action": "search", "module": "package", "tags": "imagenet"})) == []
    result = access({"action": "rm", "module": "repo", "entry": "mine", "all": True, "force": True})
    assert result["return"] == 0 and not repos["native"].exists()


def test_add_repo_refuses_non_repo_directory(tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "file.txt").write_text("x")
    result = access({"action": "add", "module": "repo", "entry": "junk", "path": str(junk)})
    assert result["return"] == 2 and "not a repo" in result["error"]


# -- the CLI over the same store --------------------------------------------------------------
def test_cli_json_output_parses(repos, cli_json):
    code, doc = cli_json("search", "package", "--tags=model,onnx")
    assert code == 0
    assert {"ckrepo:package:ml-model-mlperf-resnet50-onnx", "mine:package:bert"} <= {e["cid"] for e in doc["entries"]}


def test_cli_errors_have_exit_codes_and_hints(repos, cli):
    proc = cli("frobnicate", "package")
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown action") and "hint:" in proc.stderr
    proc = cli("list", "nosuchmodule")
    assert proc.returncode == 2 and "known modules" in proc.stderr
    proc = cli("load", "package:nope")
    assert proc.returncode == 3
    proc = cli("rm", "package:bert")  # no TTY, no --force: refused, never a prompt
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_add_with_meta_file_and_tags(cli, tmp_path):
    meta = tmp_path / "meta.yaml"
    meta.write_text("name: hello\ntags: [a, b]\nsource: {kind: hook}\n")
    proc = cli("add", "package:hello", f"@{meta}", "--tags=c")
    assert proc.returncode == 0, proc.stderr
    proc = cli("load", "package:hello", "--json")
    doc = json.loads(proc.stdout)
    assert doc["meta"]["tags"] == ["a", "b", "c"] and doc["meta"]["name"] == "hello"


def test_cli_help_version_uid(cli):
    assert "usage: ckx ACTION" in cli("help").stdout
    assert "ckx install package" in cli("help", "install").stdout
    assert cli("help", "frob").returncode == 2
    assert cli("version").stdout.startswith("ckx ")
    uid = cli("uid").stdout.strip()
    assert len(uid) == 16
