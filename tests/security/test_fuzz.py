"""Fuzzing the two doors of untrusted text: the command line and meta files; only clean, typed errors may come out.

2,000 generated cases in all: 1,000 command lines through the parser and the option typing of every
action, 300 through the CLI itself (read-only actions, a throwaway home), 700 meta files in a
throwaway repo that is then listed, searched and loaded.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckx.api import ACTIONS, access, lookup, normalise, wants_help
from ckx.cli.main import main
from ckx.cli.parse import parse_argv
from ckx.core.errors import CkxError

FUZZ = settings(deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])

# -- the command line ----------------------------------------------------------------------------------

ACTION_WORDS = sorted({action.name for action in ACTIONS}) + ["", "-", "--", "--help", "-h", "--version", "-x",
                                                              "séarch", "load\x00", "@x.json", "7"]
MODULES = sorted({action.module for action in ACTIONS if action.module}) + ["package", "soft", "env", "*", "pack*ge"]
OPTION_NAMES = sorted({option.name for action in ACTIONS for option in action.options}) + [
    "json", "quiet", "out", "env.X", "env.", "env..X", ".", "a.b.c", "tags", "deps.python", "", "=", "é", "x" * 200]
ODD_TEXT = st.sampled_from(["", " ", "\t", "\n", "\x00", "\udcff", "é", "日本", "\u202e", "..", "../..", "/", ":", "::",
                            "a:b:c:d", "*", "?", "-1", "1e999", "nan", "0x10", "9" * 5000, "true", "{}", "[]", "null"])
TEXT = st.one_of(ODD_TEXT, st.text(max_size=20))
CID = st.one_of(
    st.builds(lambda m, e: f"{m}:{e}", st.sampled_from(MODULES), TEXT),
    st.builds(lambda r, m, e: f"{r}:{m}:{e}", TEXT, st.sampled_from(MODULES), TEXT),
    st.sampled_from(MODULES), TEXT,
)
OPTION = st.one_of(
    st.builds(lambda k, v: f"--{k}={v}", st.sampled_from(OPTION_NAMES) | TEXT, TEXT),
    st.builds(lambda k: f"--{k}", st.sampled_from(OPTION_NAMES) | TEXT),
    st.builds(lambda k, v: f"-{k}={v}", st.sampled_from(OPTION_NAMES), TEXT),
    st.builds(lambda k, v: f"--env.{k}={v}", TEXT, TEXT),
)


def at_files(root: Path) -> list[str]:
    """``@file`` words: good, broken and missing input files under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    texts = {
        "good.json": json.dumps({"tags": "a,b", "meta": {"x": 1}}), "list.json": "[1, 2]", "bad.json": "{",
        "deep.json": "[" * 5000 + "]" * 5000, "big.json": '{"n": ' + "9" * 6000 + "}",
        "bom.json": "\ufeff{}", "good.yaml": "tags: a\n", "alias.yaml": "a: &x [1]\nb: *x\n",
        "date.yaml": "when: 2001-12-14\n", "binary.json": "",
    }
    for name, text in texts.items():
        (root / name).write_text(text, encoding="utf-8")
    (root / "binary.json").write_bytes(b"\xff\xfe{\x00")
    return [f"@{root / name}" for name in texts] + [f"@{root / 'missing.json'}", "@", "@~nobody/x.json"]


def argv_lists(actions: list[str], files: list[str]) -> st.SearchStrategy[list[str]]:
    word = st.one_of(CID, OPTION, st.sampled_from(files), st.just("--"), TEXT)
    return st.builds(lambda first, rest: [first, *rest], st.sampled_from(actions), st.lists(word, max_size=8))


def test_the_parser_and_the_option_typing_raise_only_ckx_errors(tmp_path_factory):
    files = at_files(tmp_path_factory.mktemp("inputs"))

    @settings(FUZZ, max_examples=1000)
    @given(argv=argv_lists(ACTION_WORDS, files))
    def check(argv: list[str]) -> None:
        try:
            inp = normalise(parse_argv(argv))
            action = lookup(inp["action"], inp.get("module"))
            if not wants_help(inp):
                action.parse(inp)
        except CkxError:
            pass

    check()


CHEAP_ACTIONS = ["search", "load", "find", "list", "list_tags", "path", "show", "version", "help", "uid"]


def test_the_cli_never_reaches_its_internal_error_path(tmp_path_factory, ckx_home):
    files = at_files(tmp_path_factory.mktemp("inputs"))

    @settings(FUZZ, max_examples=300)
    @given(argv=argv_lists(CHEAP_ACTIONS, files), json_mode=st.booleans())
    def check(argv: list[str], json_mode: bool) -> None:
        if "--" in argv[1:]:
            argv = argv[: argv.index("--", 1)]  # what follows -- is a program's, and these actions run none
        argv = [word for word in argv if not word.startswith(("--serve", "--port"))] + (["--json"] if json_mode else [])
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        assert "internal error" not in err.getvalue(), (argv, err.getvalue())
        assert isinstance(code, int)
        if json_mode and out.getvalue().strip():
            json.loads(out.getvalue())  # under --json, stdout is one JSON document, even for an error

    check()


# -- meta files ----------------------------------------------------------------------------------------

def _huge_integer(digits: int) -> int:
    return 10 ** digits


JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10),
                        st.builds(_huge_integer, st.sampled_from([400, 4400, 5000])),
                        st.sampled_from([float("inf"), "\udcff"]))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
META_KEYS = ["alias", "uid", "tags", "name", "version", "base", "source", "variations", "env", "deps", "detect",
             "schema_version", "soft", "backup_data_uid", "data_name", "run_cmds", "default_variation"]
META_DICTS = st.dictionaries(st.sampled_from(META_KEYS) | st.text(max_size=6), JSON_VALUES, max_size=8)


def _json_text(value: object) -> str:
    try:
        return json.dumps(value, allow_nan=True)
    except ValueError:  # an int too long for str(): write its digits by hand
        return "1" + "0" * 5000


YAML_TEXTS = st.sampled_from([
    "a: &x [1, 2]\nb: *x\n", "tags: [a, b]\nversion: 1.0\n", "when: 2001-12-14\nalias: x\n",
    "uid: 0x1f\nalias: !!binary aGVsbG8=\n", "!!python/object:os.system {}\n", "alias: [unclosed\n",
    "- 1\n- 2\n", "tags: 5\nalias: {a: 1}\n", "? [a, b]\n: 1\n", "x: " + "[" * 3000 + "]" * 3000 + "\n",
    "version: .inf\nname: .nan\n", "alias: \"\\ud800\"\n", "\ufeffalias: bom\n", "big: " + "9" * 5000 + "\n",
    "tags: !!set {a, b}\n", "base: null\nvariations: [1]\n", "alias: x\nalias: y\n", "",
])
META_TEXTS = st.one_of(
    YAML_TEXTS,
    META_DICTS.map(_json_text),
    JSON_VALUES.map(_json_text),
    st.integers(1, 20_000).map(lambda depth: '{"a": ' + "[" * depth + "]" * depth + "}"),
    st.integers(1, 20_000).map(lambda depth: '{"a": ' + '{"b": ' * depth + "1" + "}" * depth + "}"),
    st.sampled_from(['{"n": ' + "9" * 5000 + "}", '{"n": 1e999}', '{"n": NaN}', '{"a": 1, "a": 2}', "\ufeff{}",
                     '{"alias": "\\ud800"}', "{", "", "null", '"text"', '{"tags": "a,b"}', '{"uid": 12}']),
)
META_BYTES = st.one_of(META_TEXTS.map(lambda text: text.encode("utf-8", "surrogatepass")),
                       st.binary(max_size=64), st.sampled_from([b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b'{"a": "\xff"}']))


def test_meta_files_give_only_clean_warnings_and_meta_errors(ctx, tmp_path, ckx_home):
    root = tmp_path / "fuzzrepo"
    result = access({"action": "add", "module": "repo", "entry": "fuzz", "path": str(root)}, context=ctx)
    assert result["return"] == 0, result
    counter = itertools.count()

    @settings(FUZZ, max_examples=700)
    @given(data=META_BYTES, module=st.sampled_from(["package", "soft", "program", "things"]),
           name=st.sampled_from(["meta.json", "meta.yaml"]))
    def check(data: bytes, module: str, name: str) -> None:
        directory = root / {"package": "packages", "soft": "soft", "program": "programs"}.get(module, module)
        shutil.rmtree(root / "packages", ignore_errors=True)
        for other in ("soft", "programs", "things"):
            shutil.rmtree(root / other, ignore_errors=True)
        entry = directory / f"e{next(counter)}"
        entry.mkdir(parents=True)
        (entry / name).write_bytes(data)
        for request in ({"action": "list", "module": module}, {"action": "search", "module": module, "tags": "a"},
                        {"action": "load", "module": module, "entry": entry.name},
                        {"action": "load", "module": module, "entry": entry.name, "merged": True},
                        {"action": "find", "module": module, "entry": entry.name},
                        {"action": "list_tags", "module": module}):
            answer = access(dict(request, quiet=True), context=ctx)
            assert isinstance(answer, dict) and "return" in answer
            json.dumps(answer, default=str)
            if answer["return"]:
                assert isinstance(answer.get("error"), str) and answer["error"], answer

    check()
