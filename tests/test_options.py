"""Declared options: the typing engine, validation once in the dispatcher, suggestions, help, and the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import ckx
from ckx.api import ACTIONS, lookup
from ckx.core.errors import UsageError
from ckx.core.home import Home
from ckx.core.options import FLAG_VALUE, GLOBAL_OPTIONS, Option, parse
from ckx.store.context import Context
from ckx.store.repo import init_native_repo
from ckx.store.repo_actions import add_repo

SHOW_ENV_SCRIPT = r'''
import json, os
with open("result.json", "w") as handle:
    json.dump({"foo": os.environ.get("FOO"), "bar": os.environ.get("BAR")}, handle)
'''

SHOW_ENV_META = {
    "alias": "show-env", "uid": "70e0000000000a01", "schema_version": 1, "tags": ["toy"],
    "argv": ["{python}", "{entry_path}/show_env.py"],
    "run_cmds": {"show": {"run_vars": {}}},
}


@pytest.fixture
def show_env_program(tmp_path, monkeypatch, ckx_home) -> Path:
    """A registered repo with one program that writes $FOO and $BAR into its result.json."""
    empty = tmp_path / "empty-builtin"
    init_native_repo(empty, "builtin", "00000000000000b1")
    monkeypatch.setenv("CKX_BUILTIN_REPO", str(empty))
    monkeypatch.delenv("FOO", raising=False)
    monkeypatch.delenv("BAR", raising=False)
    repo = tmp_path / "toys"
    init_native_repo(repo, "toys", "00000000000000c1")
    entry = repo / "programs" / "show-env"
    entry.mkdir(parents=True)
    (entry / "meta.json").write_text(json.dumps(SHOW_ENV_META))
    (entry / "show_env.py").write_text(SHOW_ENV_SCRIPT)
    setup = Context(Home(ckx_home), quiet=True, interactive=False)
    add_repo(setup, {"entry": "toys", "path": str(repo)})
    setup.close()
    return repo


# -- the engine ----------------------------------------------------------------------------------
@pytest.mark.parametrize("given, expected", [
    (True, True), (False, False), ("yes", True), ("no", False), ("true", True), ("1", True), ("0", False),
    ("", False), ("on", True), ("off", False),
])
def test_bool_takes_ck_yes_no_convention(given, expected):
    assert parse([Option("record", "bool")], {"record": given})["record"] is expected


def test_bool_refuses_other_words_naming_the_option():
    with pytest.raises(UsageError, match="--record"):
        parse([Option("record", "bool")], {"record": "maybe"})


def test_int_converts_strings_and_checks_the_minimum():
    options = [Option("repetitions", "int", 1, minimum=1)]
    assert parse(options, {"repetitions": "3"})["repetitions"] == 3
    assert parse(options, {"repetitions": 4})["repetitions"] == 4
    assert parse(options, {})["repetitions"] == 1
    for bad in ("three", "2.5", 0, True, [3], 2.5, float("inf"), float("nan")):
        with pytest.raises(UsageError, match="--repetitions"):
            parse(options, {"repetitions": bad})


def test_seconds_must_be_a_positive_number():
    options = [Option("timeout", "seconds")]
    assert parse(options, {"timeout": "1.5"})["timeout"] == 1.5
    assert parse(options, {})["timeout"] is None
    for bad in ("-1", "0", "soon", True, "nan", "inf", float("inf")):
        with pytest.raises(UsageError, match="--timeout"):
            parse(options, {"timeout": bad})


def test_list_splits_commas_and_takes_lists():
    options = [Option("tags", "list")]
    assert parse(options, {"tags": "a, b,,-c"})["tags"] == ["a", "b", "-c"]
    assert parse(options, {"tags": ["x", " y "]})["tags"] == ["x", "y"]
    assert parse(options, {})["tags"] == []
    for bad in (5, True, {"a": 1}, [["nested"]]):
        with pytest.raises(UsageError, match="--tags"):
            parse(options, {"tags": bad})


def test_list_with_extra_separators():
    options = [Option("search_dir", "list", separators=",:")]
    assert parse(options, {"search_dir": "/a:/b,/c"})["search_dir"] == ["/a", "/b", "/c"]


def test_map_values_are_strings_and_a_bare_key_is_ck_yes():
    options = [Option("env", "map")]
    assert parse(options, {"env": {"FOO": True, "N": 3, "S": "x", "OFF": False}})["env"] == \
        {"FOO": FLAG_VALUE, "N": "3", "S": "x", "OFF": ""}
    assert FLAG_VALUE == "yes"
    with pytest.raises(UsageError, match="--env"):
        parse(options, {"env": "FOO"})
    with pytest.raises(UsageError, match="--env.A"):
        parse(options, {"env": {"A": {"B": "1"}}})


def test_defaults_are_fresh_copies():
    options = [Option("tags", "list"), Option("env", "map")]
    first = parse(options, {})
    first["tags"].append("x")
    first["env"]["X"] = "1"
    assert parse(options, {}) == {**{o.name: o.fresh_default() for o in GLOBAL_OPTIONS}, "tags": [], "env": {}}


def test_dict_takes_an_object_or_its_json_text():
    options = [Option("search_dict", "dict")]
    assert parse(options, {"search_dict": '{"a": 1}'})["search_dict"] == {"a": 1}
    for bad in ("[1]", "{not json", 5):
        with pytest.raises(UsageError, match="--search_dict"):
            parse(options, {"search_dict": bad})


def test_str_needs_a_value_and_choices_hold():
    options = [Option("cmd_key"), Option("format", default="csv", choices=("csv", "json"))]
    with pytest.raises(UsageError, match="--cmd_key needs a value"):
        parse(options, {"cmd_key": True})
    with pytest.raises(UsageError, match="--format must be csv or json"):
        parse(options, {"format": "xml"})
    assert parse(options, {"format": ""})["format"] == "csv"


def test_unknown_option_names_it_and_the_nearest_one():
    with pytest.raises(UsageError) as caught:
        parse([Option("repetitions", "int", 1)], {"repetition": "5"}, where="benchmark program")
    assert "--repetition " in caught.value.message and "did you mean --repetitions?" in caught.value.message
    assert "ckx help benchmark" in caught.value.hint


def test_aliases_map_to_the_option_and_twice_is_an_error():
    options = [Option("force", "bool", aliases=("f",))]
    assert parse(options, {"f": True})["force"] is True
    with pytest.raises(UsageError, match="same option"):
        parse(options, {"f": True, "force": True})


def test_reserved_and_global_inputs_are_not_unknown():
    typed = parse([], {"action": "x", "module": "m", "entry": "e", "repo": "r", "cids": ["m:e"], "rest": ["-v"],
                       "json": True, "quiet": "yes", "out": "json", "skip_print_timers": True, "verbose": True})
    assert typed["cids"] == ["m:e"] and typed["rest"] == ["-v"] and typed["quiet"] is True


def test_an_unknown_type_is_refused_when_declared():
    with pytest.raises(ValueError):
        Option("x", "number")


# -- the table -----------------------------------------------------------------------------------
@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.label)
def test_declarations_are_unique_and_their_defaults_fit_their_types(action):
    names = [spelling for option in action.options for spelling in (option.name, *option.aliases)]
    assert len(names) == len(set(names)), f"{action.label} declares an option twice"
    for option in action.options:
        assert option.help, f"{action.label} --{option.name} has no help"
        assert option.convert(option.default) == option.fresh_default()


# -- through access() and the CLI ----------------------------------------------------------------
TYPOS = [
    (["benchmark", "program:show-env", "--cmd_key=show", "--repetition=5"], "--repetition", "--repetitions"),
    (["run", "program:show-env", "--cmd_key=show", "--ofline"], "--ofline", "--offline"),
    (["search", "package", "--tag=model"], "--tag", "--tags"),
    (["install", "package", "--tags=x", "--variaton=v"], "--variaton", "--variation"),
]


@pytest.mark.parametrize("argv, typo, suggestion", TYPOS, ids=[t[1] for t in TYPOS])
def test_a_misspelt_option_is_exit_2_naming_it_and_the_nearest(show_env_program, cli, ckx_home, argv, typo, suggestion):
    proc = cli(*argv)
    assert proc.returncode == 2, proc.stderr
    assert f"unknown option {typo} " in proc.stderr and f"did you mean {suggestion}?" in proc.stderr
    assert not (ckx_home / "runs").exists(), "the action ran despite the unknown option"


@pytest.mark.parametrize("argv, typo, suggestion", TYPOS, ids=[t[1] for t in TYPOS])
def test_a_misspelt_option_through_access_is_return_2(show_env_program, argv, typo, suggestion):
    request: dict = {"action": argv[0], "cid": argv[1]}
    for word in argv[2:]:
        key, _, value = word[2:].partition("=")
        request[key] = value or True
    result = ckx.access(request)
    assert result["return"] == 2 and typo in result["error"] and suggestion in result["error"]


def test_global_flags_are_accepted_everywhere(cli):
    proc = cli("list", "repo", "--quiet", "--verbose", "--skip_print_timers", "--skip_print_stats", "--debug")
    assert proc.returncode == 0, proc.stderr
    assert ckx.access({"action": "list_tags", "module": "package", "out": "json", "json": True})["return"] == 0


def test_ck_keys_filled_by_the_dispatcher_are_not_unknown():
    result = ckx.access({"action": "list", "module_uoa": "package", "data_uoa": "*", "repo_uoa": "builtin"})
    assert result["return"] == 0, result


def test_wrong_types_are_usage_errors_naming_the_option(show_env_program, cli):
    result = ckx.access({"action": "search", "module": "package", "tags": 5})
    assert result["return"] == 2 and "--tags" in result["error"]
    proc = cli("benchmark", "program:show-env", "--cmd_key=show", "--repetitions=many")
    assert proc.returncode == 2 and "--repetitions" in proc.stderr
    proc = cli("run", "program:show-env", "--cmd_key=show", "--timeout=-3")
    assert proc.returncode == 2 and "--timeout" in proc.stderr
    proc = cli("run", "program:show-env", "--cmd_key=show", "--env=FOO")
    assert proc.returncode == 2 and "--env.KEY=VALUE" in proc.stderr


def test_a_bare_env_flag_means_the_same_in_run_and_benchmark(show_env_program, cli_json):
    code, ran = cli_json("run", "program:show-env", "--cmd_key=show", "--env.FOO", "--env.BAR=b")
    assert code == 0, ran
    code, benched = cli_json("benchmark", "program:show-env", "--cmd_key=show", "--env.FOO", "--env.BAR=b")
    assert code == 0, benched
    in_run = {k: ran["result"][k] for k in ("foo", "bar")}
    in_benchmark = {k: benched["repetitions"][0]["characteristics"][k] for k in ("foo", "bar")}
    assert in_run == in_benchmark == {"foo": "yes", "bar": "b"}
    assert ran["choices"]["env"] == benched["choices"]["env"] == {"FOO": "yes", "BAR": "b"}


def test_repetitions_are_honoured_once_spelt_right(show_env_program, cli_json):
    code, data = cli_json("benchmark", "program:show-env", "--cmd_key=show", "--repetitions=2")
    assert code == 0 and len(data["repetitions"]) == 2


# -- help ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("action", [a for a in ACTIONS if a.options], ids=lambda a: a.label)
def test_help_lists_each_declared_option(cli_json, action):
    code, data = cli_json("help", action.name)
    assert code == 0
    listed = [line.split()[0] for line in data["text"].splitlines() if line.startswith("    --")]
    for option in action.options:
        assert option.flag in listed, f"'ckx help {action.name}' does not list {option.flag}"
    described = next(a for a in data["actions"] if a["module"] == action.module)
    assert [o["name"] for o in described["options"]] == [o.name for o in action.options]


def test_help_shows_type_default_and_help_text(cli):
    proc = cli("help", "benchmark")
    assert proc.returncode == 0
    line = next(line for line in proc.stdout.splitlines() if line.strip().startswith("--repetitions=N"))
    assert line.split()[1] == "int" and "(default 1)" in line and "how many times to run" in line
    assert "--json" in proc.stdout and "--quiet" in proc.stdout


def test_action_module_help_describes_that_action_without_running_it(show_env_program, cli, ckx_home):
    proc = cli("run", "program:show-env", "--cmd_key=show", "--help")
    assert proc.returncode == 0, proc.stderr
    listed = [line.split()[:2] for line in proc.stdout.splitlines() if line.startswith("    --")]
    assert ["--offline", "bool"] in listed and ["--print_files=A,B", "list"] in listed and ["--timeout=S", "seconds"] in listed
    assert not (ckx_home / "runs").exists()
    proc = cli("rm", "env", "-h")
    listed = [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("    --")]
    assert listed == ["--tags=A,B", "--force", "--all"]


def test_lookup_returns_declared_options_for_the_web_and_python_api():
    assert {o.name for o in lookup("benchmark", "program").options} >= {"repetitions", "env", "timeout", "record"}
