"""The CK command grammar: actions, CIDs, --key=value, dotted keys, @json/@yaml input, -- rest."""
from __future__ import annotations

import json

import pytest

from ckx.core.cid import Cid, is_uid, new_uid
from ckx.cli.parse import parse_argv
from ckx.core.errors import UsageError


def test_action_cid_and_options():
    inp = parse_argv(["install", "package", "--tags=model,onnx", "--quiet"])
    assert inp == {"action": "install", "module": "package", "cids": ["package"], "tags": "model,onnx", "quiet": True}


def test_cid_with_repo_module_entry():
    inp = parse_argv(["load", "myrepo:package:foo"])
    assert (inp["repo"], inp["module"], inp["entry"]) == ("myrepo", "package", "foo")


def test_dotted_keys_nest():
    inp = parse_argv(["run", "program:x", "--env.EXTRA_OPS=--count 500", "--env.CK_VAR=1", "--dep_add_tags.lib=a,b"])
    assert inp["env"] == {"EXTRA_OPS": "--count 500", "CK_VAR": "1"}
    assert inp["dep_add_tags"] == {"lib": "a,b"}


def test_dotted_key_conflict_is_usage_error():
    with pytest.raises(UsageError):
        parse_argv(["run", "program:x", "--env=1", "--env.X=2"])


def test_empty_value_and_equals_inside_value():
    inp = parse_argv(["run", "program:x", "--env.A=", "--env.B=x=y"])
    assert inp["env"] == {"A": "", "B": "x=y"}


def test_rest_after_double_dash_is_untouched():
    inp = parse_argv(["virtual", "env", "--tags=python", "--", "--not-an-option", "@notafile", "a:b"])
    assert inp["rest"] == ["--not-an-option", "@notafile", "a:b"]
    assert inp["tags"] == "python"


def test_at_json_and_at_yaml_merge(tmp_path):
    (tmp_path / "in.json").write_text(json.dumps({"env": {"A": "1"}, "tags": "x"}))
    (tmp_path / "in.yaml").write_text("env:\n  B: '2'\nrepetitions: 3\n")
    inp = parse_argv(["benchmark", "program:p", f"@{tmp_path / 'in.json'}", f"@{tmp_path / 'in.yaml'}", "--env.C=3"])
    assert inp["env"] == {"A": "1", "B": "2", "C": "3"}
    assert inp["repetitions"] == 3 and inp["tags"] == "x"


def test_command_line_wins_over_input_file(tmp_path):
    (tmp_path / "in.json").write_text(json.dumps({"tags": "from-file"}))
    inp = parse_argv(["search", "package", "--tags=from-cli", f"@{tmp_path / 'in.json'}"])
    assert inp["tags"] == "from-cli"


def test_add_with_plain_meta_file(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({"tags": ["a"], "name": "x"}))
    inp = parse_argv(["add", "package:foo", f"@{tmp_path / 'meta.json'}"])
    assert inp["meta"] == {"tags": ["a"], "name": "x"}


def test_missing_and_bad_input_files_name_the_file(tmp_path):
    with pytest.raises(UsageError, match="nope.json"):
        parse_argv(["add", "package:foo", f"@{tmp_path / 'nope.json'}"])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UsageError, match="bad.json"):
        parse_argv(["add", "package:foo", f"@{bad}"])


def test_wildcards_are_kept_in_cids():
    inp = parse_argv(["list", "package:model-*-onnx"])
    assert inp["entry"] == "model-*-onnx"
    assert Cid.parse("exp?:experiment:*") == Cid(repo="exp?", module="experiment", entry="*")


@pytest.mark.parametrize("text", ["", "a:b:c:d", "::x", "package:../etc", "a/b:c"])
def test_bad_cids(text):
    with pytest.raises(UsageError):
        Cid.parse(text)


def test_no_arguments_means_help_and_option_first_is_usage_error():
    assert parse_argv([])["action"] == "help"
    with pytest.raises(UsageError):
        parse_argv(["--tags=x"])


def test_uids():
    uid = new_uid()
    assert is_uid(uid) and len(uid) == 16
    assert not is_uid("ABCDEF0123456789") and not is_uid("0123")
