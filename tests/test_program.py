"""`ckx run program`: env assembly, argv templates, run directories, logs, failures, base entries and deps."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from ckx.core.report import Reporter

from ckx.store.context import Context
from ckx.core.errors import MetaError, ProgramFailed, UsageError
from ckx.core.home import Home
from ckx.runs.program import run_program
from ckx.runs.program_entry import Template, env_matches, expand_argv, merge_tags, select_deps, substitute
from ckx.software.environment import apply_layer
from ckx.store.repo import init_native_repo
from ckx.store.repo_actions import add_repo

TOY_SCRIPT = r'''
import json, os, sys
import toyhelper  # an import from the entry's own directory must not leave a __pycache__ there
names = ["LAYER", "FROM_DEP", "FROM_RUN_VARS", "FROM_KEY", "FROM_USER", "FROM_OS", "PYTHONPATH", "EXTRA_OPS"]
report = {"argv": sys.argv[1:], "cwd": os.getcwd(), "env": {n: os.environ.get(n) for n in names}}
print("hello on stdout", flush=True)
print("a note on stderr", file=sys.stderr, flush=True)
if os.environ.get("TOY_SLEEP"):
    import time
    time.sleep(float(os.environ["TOY_SLEEP"]))
if os.environ.get("TOY_FAIL"):
    for n in range(30):
        print(f"noise line {n}", file=sys.stderr)
    print("error: the toy broke on purpose", file=sys.stderr, flush=True)
    sys.exit(int(os.environ["TOY_FAIL"]))
if not os.environ.get("TOY_NO_RESULT"):
    with open("result.json", "w") as handle:
        json.dump({"metric": {"name": "answer", "value": 42}, "report": report}, handle)
with open("notes.txt", "w") as handle:
    handle.write("notes of the toy\n")
'''

TOY_META = {
    "alias": "toy", "uid": "70e0000000000001", "schema_version": 1, "tags": ["toy", "test"],
    "run_vars": {"LAYER": "run_vars", "FROM_RUN_VARS": "rv:{entry_path}", "PYTHONPATH": "{entry_path}/lib"},
    "argv": [
        "{python}", "{entry_path}/toy.py",
        ["--threads", "{env:THREADS}"],
        "--name={env:NAME}",
        "$FROM_KEY",
        {"if_env": {"MODE": ["accuracy"]}, "argv": ["--accuracy"]},
        "--run-dir", "{run_dir}",
        "{{literal}}",
    ],
    "run_cmds": {
        "alpha": {"run_vars": {"LAYER": "key", "FROM_KEY": "k-alpha", "MODE": "accuracy"}},
        "beta": {"run_vars": {"MODE": "performance"}},
        "gamma": {"run_vars": {}, "argv": ["{python}", "-c", "print('gamma ran')"]},
    },
}


class Recorder(Reporter):
    """Keeps the streamed output lines; answers choose() with a fixed pick."""

    def __init__(self, pick: int | None = None) -> None:
        super().__init__()
        self.lines: list[tuple[str, str]] = []
        self.pick = pick
        self.asked: list[list[str]] = []

    def output(self, line: str, *, stream: str = "stdout") -> None:
        self.lines.append((stream, line))

    def choose(self, question, options, default=None):
        self.asked.append(list(options))
        return self.pick


def write_entry(repo: Path, alias: str, meta: dict, files: dict[str, str] | None = None) -> Path:
    entry = repo / "programs" / alias
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "meta.json").write_text(json.dumps(meta, indent=1))
    for name, text in (files or {}).items():
        (entry / name).write_text(text)
    return entry


@pytest.fixture
def toys(tmp_path, monkeypatch, ckx_home):
    """A registered native repo holding the toy program; the built-in repo is swapped for an empty one."""
    empty = tmp_path / "empty-builtin"
    init_native_repo(empty, "builtin", "00000000000000b1")
    monkeypatch.setenv("CKX_BUILTIN_REPO", str(empty))
    repo = tmp_path / "toys"
    init_native_repo(repo, "toys", "00000000000000c1")
    write_entry(repo, "toy", TOY_META, {"toy.py": TOY_SCRIPT, "toyhelper.py": "VALUE = 1\n"})
    setup = Context(Home(ckx_home), quiet=True, interactive=False)
    add_repo(setup, {"entry": "toys", "path": str(repo)})
    setup.close()
    for name in ("THREADS", "NAME", "FROM_KEY", "MODE", "LAYER", "TOY_FAIL", "TOY_SLEEP", "TOY_NO_RESULT",
                 "EXTRA_OPS", "FROM_USER", "FROM_DEP"):
        monkeypatch.delenv(name, raising=False)
    return repo


def make_ctx(home: Path, reporter: Reporter | None = None, interactive: bool = False, quiet: bool = True) -> Context:
    return Context(Home(home), reporter=reporter or Recorder(), quiet=quiet, interactive=interactive)


def listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*"))


# -- pure helpers --------------------------------------------------------------------------------
def test_merge_tags_narrows_and_an_added_tag_replaces_its_opposite():
    assert merge_tags("model,onnx,-synthetic", "synthetic") == "model,onnx,synthetic"
    assert merge_tags(["a", "b"], "c,-d") == "a,b,c,-d"
    assert merge_tags("a,b", "-b") == "a,-b"
    assert merge_tags("a,b", "") == "a,b"


def test_env_matches_lists_single_values_and_booleans():
    env = {"B": "onnxruntime", "E": ""}
    assert env_matches({"B": ["onnxruntime", "pytorch"]}, env)
    assert not env_matches({"B": ["null"]}, env)
    assert env_matches({"B": "onnxruntime"}, env)
    assert env_matches({"B": True, "E": False, "UNSET": False}, env)
    assert not env_matches({"E": True}, env)


def test_path_lists_are_joined_newest_first_and_other_vars_replaced():
    env = {"PYTHONPATH": "/os/site", "X": "old"}
    apply_layer(env, {"PYTHONPATH": "/dep/a", "X": "dep"})
    apply_layer(env, {"PYTHONPATH": "/dep/b:$PYTHONPATH"})
    apply_layer(env, {"PYTHONPATH": "/dep/a", "GONE": None, "FLAG": True})
    assert env["PYTHONPATH"] == os.pathsep.join(["/dep/a", "/dep/b", "/os/site"])
    assert env["X"] == "dep" and env["FLAG"] == "1" and "GONE" not in env


def test_argv_items_with_an_empty_env_reference_are_dropped_whole():
    values = {"python": "/py", "entry_path": "/e", "base_path": None, "run_dir": "/r", "cache_dir": "/c"}
    tpl = Template(values, {"SET": "v", "EMPTY": "", "MODE": "accuracy"}, "test")
    argv = expand_argv(["{python}", ["--a", "{env:SET}"], ["--b", "{env:EMPTY}"], ["--c", "{env:UNSET}"],
                        "--d=$SET", "--e=${UNSET}", "{env:EMPTY}", "lit$$eral{{x}}",
                        {"if_env": {"MODE": ["accuracy"]}, "argv": ["--acc", ["--f", "$SET"]]},
                        {"if_env": {"MODE": "performance"}, "argv": ["--perf"]}], tpl)
    assert argv == ["/py", "--a", "v", "--d=v", "lit$eral{x}", "--acc", "--f", "v"]
    assert len(tpl.missing) == 4


def test_unknown_placeholders_and_missing_base_are_meta_errors():
    values = {"python": "/py", "entry_path": "/e", "base_path": None, "run_dir": "/r", "cache_dir": "/c"}
    with pytest.raises(MetaError, match="unknown placeholder"):
        substitute("{pyhton}", Template(values, {}, "toy"))
    with pytest.raises(MetaError, match="no base entry"):
        substitute("{base_path}/x", Template(values, {}, "toy"))
    with pytest.raises(MetaError, match="neither a string"):
        expand_argv([3], Template(values, {}, "toy"))


def test_select_deps_applies_enable_if_env_add_tags_and_offline_rule():
    deps = {
        "model": {"tags": "model,onnx,-synthetic", "offline_tags": "model,onnx,tiny", "sort": 5,
                  "enable_if_env": {"BACKEND": ["onnxruntime"]}},
        "data": {"tags": ["data", "val"], "offline_tags": "data,sample", "skip_if_env": "DATA_MAP"},
        "dropped": None,
    }
    specs, skipped = select_deps(deps, {"BACKEND": "onnxruntime"}, {"model": "synthetic"}, {}, source="toy")
    assert specs["model"] == {"tags": "model,onnx,synthetic", "sort": 5}
    assert specs["data"] == {"tags": "data,val", "offline_tags": "data,sample", "skip_if_env": ["DATA_MAP"]}
    assert skipped == []
    specs, skipped = select_deps(deps, {"BACKEND": "null"}, {}, {}, source="toy")
    assert list(specs) == ["data"] and skipped == ["model"]
    specs, _ = select_deps({"data": {"tags": "data", "names": ["dataset", "ds"]}}, {}, {"ds": "full"},
                           {"dataset": "0123456789abcdef"}, source="toy")
    assert specs["data"]["tags"] == "data,full"
    with pytest.raises(UsageError, match="no dependency nope"):
        select_deps(deps, {}, {"nope": "x"}, {}, source="toy")
    with pytest.raises(UsageError, match="no dependency dropped"):
        select_deps(deps, {}, {}, {"dropped": "0123456789abcdef"}, source="toy")


# -- running -------------------------------------------------------------------------------------
def test_env_order_argv_and_run_dir(toys, ckx_home, monkeypatch):
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    monkeypatch.setenv("FROM_OS", "os")
    monkeypatch.setenv("LAYER", "os")
    monkeypatch.setenv("PYTHONPATH", "/from/os")
    before = listing(toys)
    reporter = Recorder()
    ctx = make_ctx(ckx_home, reporter)
    out = run_program(ctx, "program:toy", cmd_key="alpha", env={"FROM_USER": "u", "THREADS": "3"},
                      extra_args=["--extra", "x"])
    ctx.close()
    assert listing(toys) == before, "a run wrote into the repo"
    runs = ckx_home / "runs" / "toy"
    assert out.run_dir.parent == runs and out.run_dir.is_dir()
    report = out.result["report"]
    assert report["cwd"] == str(out.run_dir)
    entry = toys / "programs" / "toy"
    assert report["argv"] == ["--threads", "3", "k-alpha", "--accuracy", "--run-dir", str(out.run_dir),
                              "{literal}", "--extra", "x"]
    env = report["env"]
    assert env["LAYER"] == "key" and env["FROM_OS"] == "os" and env["FROM_USER"] == "u"
    assert env["FROM_RUN_VARS"] == f"rv:{entry}"
    assert env["PYTHONPATH"].split(os.pathsep) == [f"{entry}/lib", "/from/os"]
    assert out.stdout_path.read_text() == "hello on stdout\n"
    assert out.stderr_path.read_text() == "a note on stderr\n"
    assert ("stdout", "hello on stdout") in reporter.lines and ("stderr", "a note on stderr") in reporter.lines
    assert out.choices == {"program": "toy", "program_uid": "70e0000000000001", "cmd_key": "alpha",
                           "env": {"FROM_USER": "u", "THREADS": "3"}, "dep_add_tags": {}, "offline": False,
                           "deps": {}, "extra_args": ["--extra", "x"]}
    saved = json.loads((out.run_dir / "result.json").read_text())
    assert saved["metric"] == {"name": "answer", "value": 42}
    assert saved["run"]["cmd_key"] == "alpha" and saved["run"]["returncode"] == 0
    assert saved["run"]["argv"][0] == sys.executable
    assert out.result["run"] == saved["run"]


def test_user_env_wins_and_empty_options_vanish(toys, ckx_home):
    ctx = make_ctx(ckx_home)
    out = run_program(ctx, "toy", cmd_key="beta", env={"LAYER": "user", "NAME": "n1"}, stream=False)
    ctx.close()
    report = out.result["report"]
    assert report["env"]["LAYER"] == "user"
    assert report["argv"] == ["--name=n1", "--run-dir", str(out.run_dir), "{literal}"]
    assert ctx.reporter.lines == []


def test_two_runs_get_distinct_run_dirs(toys, ckx_home):
    ctx = make_ctx(ckx_home)
    first = run_program(ctx, "toy", cmd_key="gamma", stream=False)
    second = run_program(ctx, "toy", cmd_key="gamma", stream=False)
    ctx.close()
    assert first.run_dir != second.run_dir
    assert first.stdout_path.read_text() == "gamma ran\n"


def test_program_without_result_json_gets_the_run_record_only(toys, ckx_home):
    ctx = make_ctx(ckx_home)
    out = run_program(ctx, "toy", cmd_key="beta", env={"TOY_NO_RESULT": "1"}, stream=False)
    ctx.close()
    assert out.result == {}
    saved = json.loads((out.run_dir / "result.json").read_text())
    assert set(saved) == {"run", "schema_version"} and saved["run"]["program"] == "toy"


def test_failure_raises_program_failed_naming_stderr(toys, ckx_home):
    ctx = make_ctx(ckx_home)
    with pytest.raises(ProgramFailed) as caught:
        run_program(ctx, "toy", cmd_key="beta", env={"TOY_FAIL": "3"}, stream=False)
    ctx.close()
    message = str(caught.value)
    assert "exited with code 3" in message and "stderr.log" in message
    assert "error: the toy broke on purpose" in message and "noise line 0" not in message
    run_dir = next((ckx_home / "runs" / "toy").iterdir())
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["run"]["returncode"] == 3


def test_failure_through_the_cli_is_exit_6(toys, cli):
    proc = cli("run", "program:toy", "--cmd_key=beta", "--env.TOY_FAIL=5")
    assert proc.returncode == 6, proc.stderr
    assert "stderr.log" in proc.stderr and "the toy broke on purpose" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "hello on stdout" in proc.stdout


def test_timeout_stops_the_program(toys, ckx_home):
    ctx = make_ctx(ckx_home)
    with pytest.raises(ProgramFailed, match="time limit"):
        run_program(ctx, "toy", cmd_key="beta", env={"TOY_SLEEP": "30"}, stream=False, timeout_s=1)
    ctx.close()


def test_missing_executable_is_program_failed(toys, ckx_home):
    write_entry(toys, "broken", {"alias": "broken", "uid": "70e0000000000009", "schema_version": 1, "tags": [],
                                 "argv": ["{entry_path}/no-such-binary"], "run_cmds": {"run": {}}})
    ctx = make_ctx(ckx_home)
    with pytest.raises(ProgramFailed, match="could not start"):
        run_program(ctx, "broken", cmd_key=None, stream=False)
    ctx.close()


def test_missing_cmd_key_lists_keys_without_prompting(toys, cli):
    proc = cli("run", "program:toy")
    assert proc.returncode == 2
    assert "needs --cmd_key" in proc.stderr and "alpha, beta, gamma" in proc.stderr
    proc = cli("run", "program:toy", "--cmd_key=delta", "--quiet")
    assert proc.returncode == 2 and "no command key 'delta'" in proc.stderr


def test_missing_cmd_key_on_a_tty_asks(toys, ckx_home):
    reporter = Recorder(pick=2)
    ctx = make_ctx(ckx_home, reporter, interactive=True, quiet=False)
    out = run_program(ctx, "toy", cmd_key=None, stream=False)
    ctx.close()
    assert reporter.asked == [["alpha", "beta", "gamma"]]
    assert out.choices["cmd_key"] == "gamma"
    quiet = make_ctx(ckx_home, Recorder(pick=0), interactive=True, quiet=True)
    with pytest.raises(UsageError):
        run_program(quiet, "toy", cmd_key=None, stream=False)
    assert quiet.reporter.asked == []
    quiet.close()


def test_print_files_through_the_cli(toys, cli):
    proc = cli("run", "program:toy", "--cmd_key=beta", "--print_files=notes.txt,absent.txt")
    assert proc.returncode == 0, proc.stderr
    assert "--- notes.txt\nnotes of the toy" in proc.stdout
    assert "absent.txt" in proc.stderr
    proc = cli("run", "program:toy", "--cmd_key=beta", "--print_files=../../escape")
    assert proc.returncode == 2


def test_json_output_carries_the_result(toys, cli_json):
    code, data = cli_json("run", "program:toy", "--cmd_key=beta")
    assert code == 0
    assert data["result"]["metric"]["value"] == 42 and data["choices"]["cmd_key"] == "beta"
    assert Path(data["run_dir"]).is_dir()


def test_base_entry_merge_and_base_path(toys, ckx_home):
    write_entry(toys, "toy-base", {
        "alias": "toy-base", "uid": "70e0000000000002", "schema_version": 1, "tags": ["base"], "abstract": True,
        "run_vars": {"LAYER": "base", "FROM_RUN_VARS": "{base_path}"},
        "argv": ["{python}", "{base_path}/toy.py", "$FROM_KEY"],
        "run_cmds": {"one": {"run_vars": {"FROM_KEY": "base-one"}}, "two": {"run_vars": {"FROM_KEY": "base-two"}}},
    }, {"toy.py": TOY_SCRIPT, "toyhelper.py": "VALUE = 1\n"})
    write_entry(toys, "toy-derived", {
        "alias": "toy-derived", "uid": "70e0000000000003", "schema_version": 1, "tags": ["derived"],
        "base": "toy-base", "aliases": ["toy-by-another-name"],
        "run_vars": {"LAYER": "derived"},
        "run_cmds": {"two": {"run_vars": {"FROM_KEY": "derived-two"}}},
    })
    ctx = make_ctx(ckx_home)
    out = run_program(ctx, "program:toy-by-another-name", cmd_key="two", stream=False)
    report = out.result["report"]
    assert report["env"]["LAYER"] == "derived"
    assert report["env"]["FROM_RUN_VARS"] == str(toys / "programs" / "toy-base")
    assert report["argv"] == ["derived-two"]
    assert out.run_dir.parent.name == "toy-derived"
    with pytest.raises(UsageError, match="base entry") as caught:
        run_program(ctx, "toy-base", cmd_key="one", stream=False)
    assert "toy-derived" in caught.value.hint
    ctx.close()


def test_disabled_dep_is_never_resolved(toys, ckx_home):
    meta = dict(TOY_META, alias="toy-null", uid="70e0000000000004",
                deps={"model": {"tags": "nothing-has-this-tag", "enable_if_env": {"BACKEND": ["real"]}}},
                run_vars={"BACKEND": "real"})
    write_entry(toys, "toy-null", meta, {"toy.py": TOY_SCRIPT, "toyhelper.py": "VALUE = 1\n"})
    ctx = make_ctx(ckx_home)
    out = run_program(ctx, "toy-null", cmd_key="beta", env={"BACKEND": "null"}, stream=False)
    ctx.close()
    assert out.choices["deps"] == {} and out.result["run"]["skipped_deps"] == ["model"]


def test_unknown_dep_names_are_usage_errors(toys, cli):
    proc = cli("run", "program:toy", "--cmd_key=beta", "--dep_add_tags.model=x")
    assert proc.returncode == 2 and "no dependency model" in proc.stderr


def test_bad_meta_is_reported_with_the_file(toys, ckx_home):
    write_entry(toys, "toy-bad", {"alias": "toy-bad", "uid": "70e0000000000005", "schema_version": 1, "tags": [],
                                  "argv": [{"if_env": {}}], "run_cmds": {"k": {}}})
    ctx = make_ctx(ckx_home)
    with pytest.raises(MetaError, match="toy-bad"):
        run_program(ctx, "toy-bad", cmd_key="k", stream=False)
    ctx.close()


# -- dependencies (through the resolver and real env records) -------------------------------------
@pytest.fixture
def toy_envs(toys, ckx_home, tmp_path):
    """Three recorded envs of a made-up library: alpha and beta (same soft), and a helper."""
    envs = pytest.importorskip("ckx.software.envs")
    ctx = make_ctx(ckx_home)
    made = {}
    for name, version, extra in (("alpha", "1.0", "alpha"), ("beta", "2.0", "beta")):
        site = tmp_path / f"site-{name}"
        site.mkdir()
        (site / "toylib.py").write_text(f"NAME = {name!r}\n")
        made[name] = envs.record_env(
            ctx, soft="lib.toylib", version=version, full_path=str(site / "toylib.py"),
            env={"PYTHONPATH": str(site), "FROM_DEP": name, "LAYER": "dep"},
            tags=["lib", "toylib"], extra_tags=[extra],
        )
    helper_site = tmp_path / "site-helper"
    helper_site.mkdir()
    (helper_site / "h.py").write_text("")
    made["helper"] = envs.record_env(ctx, soft="lib.toyhelper", version="0.1", full_path=str(helper_site / "h.py"),
                                     env={"PYTHONPATH": str(helper_site)}, tags=["lib", "toyhelper"])
    ctx.close()
    meta = dict(TOY_META, alias="toy-deps", uid="70e0000000000006",
                deps={"lib": {"tags": "lib,toylib", "sort": 10}, "helper": {"tags": "lib,toyhelper", "sort": 20}})
    write_entry(toys, "toy-deps", meta, {"toy.py": TOY_SCRIPT, "toyhelper.py": "VALUE = 1\n"})
    return made


def test_deps_env_sits_under_run_vars_and_pythonpaths_join(toy_envs, ckx_home, tmp_path):
    ctx = make_ctx(ckx_home)
    out = run_program(ctx, "toy-deps", cmd_key="beta", dep_add_tags={"lib": "beta"}, stream=False)
    ctx.close()
    env = out.result["report"]["env"]
    assert env["FROM_DEP"] == "beta"
    assert env["LAYER"] == "run_vars"  # the program's run_vars override the dep's value
    paths = env["PYTHONPATH"].split(os.pathsep)
    entry = out.result["run"]["program_path"]
    assert paths[:3] == [f"{entry}/lib", str(tmp_path / "site-helper"), str(tmp_path / "site-beta")]
    assert out.choices["deps"]["lib"]["env_uid"] == toy_envs["beta"].uid
    assert out.choices["deps"]["lib"]["version"] == "2.0"
    assert out.choices["dep_add_tags"] == {"lib": "beta"}
    assert out.result["run"]["versions"] == {"lib": "2.0", "helper": "0.1"}


def test_forced_dep_wins(toy_envs, ckx_home):
    ctx = make_ctx(ckx_home)
    out = run_program(ctx, "toy-deps", cmd_key="beta", deps={"lib": toy_envs["alpha"].uid}, stream=False)
    ctx.close()
    assert out.result["report"]["env"]["FROM_DEP"] == "alpha"
    assert out.choices["deps"]["lib"]["env_uid"] == toy_envs["alpha"].uid


def test_narrowing_to_nothing_is_a_resolution_error(toy_envs, cli):
    proc = cli("run", "program:toy-deps", "--cmd_key=beta", "--dep_add_tags.lib=gamma")
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr


# -- the built-in MLPerf programs: their argv must be what the harness accepts ------------------------
MLPERF_PROGRAMS = ("image-classification-onnx-cpu", "image-classification-pytorch-cpu", "image-classification-tf-cpu",
                   "image-classification-tvm-cpu", "image-classification-openvino-cpu")
MLPERF_BACKENDS = {"onnx": "onnxruntime", "pytorch": "pytorch", "tf": "tensorflow", "tvm": "tvm", "openvino": "openvino"}
# the framework dependencies each program drops for the null backend
MLPERF_FRAMEWORK_DEPS = {"onnxruntime": ["onnxruntime"], "pytorch": ["torch"], "tensorflow": ["tensorflow"],
                         "tvm": ["onnx", "onnxruntime", "tvm"], "openvino": ["openvino"]}
MLPERF_KEYS = [f"{mode}-{scenario}" for mode in ("accuracy", "performance")
               for scenario in ("offline", "server", "singlestream", "multistream")]
SCENARIOS = {"offline": "Offline", "server": "Server", "singlestream": "SingleStream", "multistream": "MultiStream"}


class FakeDep:
    """Stands in for a resolved dependency: only what build_command reads."""

    def __init__(self, env: dict, soft: str | None = None, full_path: str | None = None) -> None:
        self.env, self.soft, self.full_path = env, soft, full_path


def harness_parser(monkeypatch):
    from ckx.core.home import builtin_repo_path

    monkeypatch.syspath_prepend(str(builtin_repo_path() / "programs" / "image-classification-base"))
    from harness.cli import build_parser

    return build_parser()


@pytest.mark.parametrize("program_name", MLPERF_PROGRAMS)
def test_mlperf_programs_argv_is_what_the_harness_parses(program_name, ctx, tmp_path, monkeypatch):
    from ckx.runs.program_entry import build_command, load_program, select_deps

    parser = harness_parser(monkeypatch)
    program = load_program(ctx, f"program:{program_name}")
    base = Path(program.base_path)
    assert base.name == "image-classification-base" and (base / "harness" / "__main__.py").is_file()
    model = FakeDep({"ML_MODEL_FILE": "/m/model.bin", "ML_MODEL_PROFILE": "mlperf-resnet50",
                     "MLPERF_MODEL_NAME": "resnet50",
                     "ML_MODEL_LABEL_OFFSET": "-1", "ML_MODEL_INPUT_LAYERS": "input_tensor:0",
                     "ML_MODEL_OUTPUT_LAYERS": "softmax_tensor:0", "ML_MODEL_DATA_LAYOUT": "NCHW",
                     "ML_MODEL_ACCURACY_MEANINGLESS": "1"}, soft="model.onnx")
    dataset = FakeDep({"CK_ENV_DATASET_IMAGENET_VAL": "/d/images", "CK_CAFFE_IMAGENET_VAL_TXT": "/d/val_map.txt",
                       "PYTHONPATH": "/site/dataset"})
    python = FakeDep({"PYTHONPATH": "/site/python"}, soft="compiler.python", full_path="/usr/bin/python3.11")
    backend = MLPERF_BACKENDS[program_name.split("-")[2]]
    for key in MLPERF_KEYS:
        argv, env = build_command(program, key, [python, dataset, model], {"MLPERF_THREADS": "2"}, run_dir=tmp_path,
                                  cache_dir=tmp_path / "cache", base_env={})
        assert argv[:3] == ["/usr/bin/python3.11", "-m", "harness"]
        args = parser.parse_args(argv[3:])
        mode, scenario = key.split("-")
        assert args.scenario == SCENARIOS[scenario] and args.accuracy == (mode == "accuracy")
        assert (args.backend, args.model, args.profile) == (backend, "/m/model.bin", "mlperf-resnet50")
        assert args.label_offset == -1 and args.model_name == "resnet50"
        assert (args.input_name, args.output_name, args.data_layout) == ("input_tensor:0", "softmax_tensor:0", "NCHW")
        assert (args.dataset_path, args.dataset_list) == ("/d/images", "/d/val_map.txt")
        assert args.output == str(tmp_path) and args.threads == 2 and args.accuracy_meaningless
        assert args.cache_dir == str(tmp_path / "cache" / "preprocessed")
        assert args.max_batchsize == 32 and args.user_conf is None and not args.torch_compile and not args.debug
        assert env["PYTHONPATH"].split(os.pathsep) == [str(base), "/site/dataset", "/site/python"]
    # the null backend: no model or framework dependency, and no --model
    specs, skipped = select_deps(program.meta["deps"], {"MLPERF_BACKEND": "null"}, {}, {}, source=program_name)
    assert sorted(skipped) == sorted(["inference-src", "model", *MLPERF_FRAMEWORK_DEPS[backend]])
    assert sorted(specs) == ["cv2", "dataset", "dataset-aux", "loadgen", "numpy", "python"]
    # a compliance key: the official tools become a dependency and the harness gets the test's name
    specs, _ = select_deps(program.meta["deps"], {"MLPERF_COMPLIANCE": "TEST04"}, {}, {}, source=program_name)
    assert "inference-src" in specs
    source = FakeDep({"MLPERF_INFERENCE_SOURCE": "/src/inference"})
    argv, _ = build_command(program, "compliance-test04-offline", [python, dataset, model, source], {},
                            run_dir=tmp_path, cache_dir=tmp_path, base_env={})
    args = parser.parse_args(argv[3:])
    assert (args.compliance, args.scenario, args.inference_src) == ("TEST04", "Offline", "/src/inference")
    assert not args.accuracy and args.rules == "v6.1" and not args.find_performance
    argv, _ = build_command(program, "performance-server", [python, dataset], {"MLPERF_BACKEND": "null"},
                            run_dir=tmp_path, cache_dir=tmp_path, base_env={})
    args = parser.parse_args(argv[3:])
    assert args.backend == "null" and args.model is None and not args.accuracy


def test_mlperf_program_deps_follow_offline_and_synthetic_choices(ctx):
    from ckx.runs.program_entry import load_program

    onnx = load_program(ctx, "program:mlperf-inference-bench-image-classification-onnx-cpu")
    specs, _ = select_deps(onnx.meta["deps"], {"MLPERF_BACKEND": "onnxruntime"}, {"model": "synthetic"}, {}, source="t")
    assert specs["model"]["tags"] == "model,image-classification,resnet50,onnx,-int8,synthetic"
    assert "offline_tags" not in specs["model"]
    assert specs["dataset"]["offline_tags"] == "dataset,imagenet,val,sample"
    assert specs["dataset-aux"]["skip_if_env"] == ["CK_CAFFE_IMAGENET_VAL_TXT"]
    assert [n for n, _ in sorted(specs.items(), key=lambda kv: kv[1]["sort"])][:2] == ["python", "numpy"]


def test_mlperf_program_without_cmd_key_lists_its_eight_keys(cli):
    proc = cli("run", "program:mlperf-inference-bench-image-classification-onnx-cpu")
    assert proc.returncode == 2
    assert all(key in proc.stderr for key in MLPERF_KEYS)
    proc = cli("run", "program:image-classification-base", "--cmd_key=accuracy-offline")
    assert proc.returncode == 2 and "image-classification-onnx-cpu" in proc.stderr


def test_download_failure_names_both_ways_forward(toys, cli):
    package = toys / "packages" / "toy-weights"
    package.mkdir(parents=True)
    (package / "meta.json").write_text(json.dumps({
        "alias": "toy-weights", "uid": "70e0000000000010", "schema_version": 1, "tags": ["toy-weights"],
        "name": "weights of the toy", "version": "1", "soft": "toy.weights",
        "source": {"kind": "download", "urls": ["http://127.0.0.1:9/toy.bin"], "filename": "toy.bin",
                   "md5": "0123456789abcdef0123456789abcdef"},
        "env": {"TOY_WEIGHTS": "{install_dir}/toy.bin"},
    }))
    meta = dict(TOY_META, alias="toy-dl", uid="70e0000000000011", deps={"weights": {"tags": "toy-weights"}})
    write_entry(toys, "toy-dl", meta, {"toy.py": TOY_SCRIPT, "toyhelper.py": "VALUE = 1\n"})
    proc = cli("run", "program:toy-dl", "--cmd_key=beta", timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "toy.bin" in proc.stderr
    hint = proc.stderr.split("hint:")[-1]
    assert "ckx install package:toy-weights --local_path=FILE" in hint
    assert "ckx run program:toy-dl --cmd_key=beta --offline" in hint


def test_download_failure_suggests_the_programs_short_run(toys, cli):
    package = toys / "packages" / "toy-weights-2"
    package.mkdir(parents=True)
    (package / "meta.json").write_text(json.dumps({
        "alias": "toy-weights-2", "uid": "70e0000000000020", "schema_version": 1, "tags": ["toy-weights-2"],
        "name": "weights of the toy", "version": "1", "soft": "toy.weights",
        "source": {"kind": "download", "urls": ["http://127.0.0.1:9/toy2.bin"], "filename": "toy2.bin",
                   "md5": "0123456789abcdef0123456789abcdef"},
        "env": {"TOY_WEIGHTS": "{install_dir}/toy2.bin"},
    }))
    meta = dict(TOY_META, alias="toy-dl-short", uid="70e0000000000021", deps={"weights": {"tags": "toy-weights-2"}},
                short_run_env={"EXTRA_OPS": "--time 10"})
    write_entry(toys, "toy-dl-short", meta, {"toy.py": TOY_SCRIPT, "toyhelper.py": "VALUE = 1\n"})
    proc = cli("run", "program:toy-dl-short", "--cmd_key=beta", timeout=120)
    assert proc.returncode == 1, proc.stderr
    hint = proc.stderr.split("hint:")[-1]
    assert "ckx run program:toy-dl-short --cmd_key=beta --offline --env.EXTRA_OPS='--time 10'" in hint
