"""Coexistence with CK repos: pulling the real mlcommons@ck-mlops changes no result, CK variations select as
tags, CK-format programs name the native program, and entries from others never shadow built-in or user ones."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ckx.core.errors import Ambiguous
from ckx.core.home import Home
from ckx.software.packages import choose_candidate, choose_package, find_candidates
from ckx.software.venv import template_requirements
from ckx.store.context import Context
from ckx.store.entry import foreign_origin, mark_foreign

ROOT = Path(__file__).resolve().parent.parent
CK_MLOPS = ROOT.parent / "shared" / "ck-mlops" / "repo"
CK_REPO = "mlcommons@ck-mlops"
GIT = ["git", "-c", "user.name=ckx test", "-c", "user.email=test@example.org", "-c", "commit.gpgsign=false",
       "-c", "init.defaultBranch=master"]
ACCURACY_LINE = re.compile(r"^accuracy=\d+\.\d{3}%, good=\d+, total=\d+$", re.MULTILINE)
ONNX = "program:image-classification-onnx-cpu"
CK_ONNX = "program:mlperf-inference-bench-image-classification-onnx-cpu"
# Built-in packages that ck-mlops has a twin of (same alias and tags), and a soft with a CK twin.
TWIN_TAGS = ("lib,python-package,numpy", "lib,python-package,onnxruntime-cpu", "lib,python-package,torch")
TWIN_ALIASES = ("lib-python-numpy", "lib-python-onnxruntime-cpu", "imagenet-2012-aux")

needs_ck_mlops = pytest.mark.skipif(not (CK_MLOPS / ".ckr.json").is_file(), reason=f"no ck-mlops checkout at {CK_MLOPS}")


# -- helpers ---------------------------------------------------------------------------------------
def git_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull})
    env.pop("GIT_TEMPLATE_DIR", None)
    return env


def ckx(home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -m ckx ARGS`` in ``home``, stdin not a terminal."""
    env = git_env()
    env.update({"CKX_HOME": str(home), "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))})
    for name in ("CKX_TOOLS", "CKX_URL_MAP", "CKX_OFFLINE", "CKX_DEBUG", "CKX_QUIET", "EXTRA_OPS", "CKX_DEV"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "ckx", *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=timeout, cwd=home)


def ckx_json(home: Path, *args: str) -> tuple[int, dict]:
    proc = ckx(home, *args, "--json")
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"not JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None


def context(home: Path) -> Context:
    return Context(Home(home), quiet=True, interactive=False)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def add_user_repo(home: Path, tmp: Path, name: str = "mine") -> Path:
    path = tmp / f"repo-{name}"
    proc = ckx(home, "add", f"repo:{name}", f"--path={path}")
    assert proc.returncode == 0, proc.stderr
    return path


def builtin_meta(kind_dir: str, alias: str) -> dict:
    return json.loads((ROOT / kind_dir / alias / "meta.json").read_text())


def twin(meta: dict, uid: str, **changes) -> dict:
    """A copy of a built-in entry's meta under another uid (same alias and tags)."""
    return {**meta, "uid": uid, **changes}


# -- the real ck-mlops, pulled from a git remote on disk --------------------------------------------
@pytest.fixture(scope="session")
def ck_mlops_url(tmp_path_factory) -> str:
    """A bare git remote holding one commit of the ck-mlops checkout (10,797 files), made once per session."""
    if not (CK_MLOPS / ".ckr.json").is_file():
        pytest.skip(f"no ck-mlops checkout at {CK_MLOPS}")
    work = tmp_path_factory.mktemp("ck-mlops-remote")
    tree = work / "tree"
    shutil.copytree(CK_MLOPS, tree, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "ck-mlops"]):
        subprocess.run([*GIT, *args], cwd=tree, check=True, env=git_env(), capture_output=True, timeout=300)
    bare = work / "ck-mlops.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(tree), str(bare)], check=True, env=git_env(),
                   capture_output=True, timeout=300)
    shutil.rmtree(tree)
    return bare.as_uri()


def pull_ck_mlops(home: Path, url: str) -> None:
    proc = ckx(home, "pull", "repo", f"--url={url}")
    assert proc.returncode == 0, proc.stderr
    code, data = ckx_json(home, "list", "repo")
    repos = {r["name"]: r for r in data["repos"]} if "repos" in data else {}
    assert repos.get(CK_REPO, {}).get("origin") == "pulled", data


def observe(home: Path) -> dict:
    """What the commands that must not change give: each one's exit code and the fields that matter."""
    seen: dict = {}
    code, data = ckx_json(home, "detect", "soft:compiler.python", f"--full_path={sys.executable}")
    seen["detect"] = (code, [(e["uid"], e["full_path"]) for e in data.get("envs", [])], data.get("error"))
    code, data = ckx_json(home, "detect", "soft:compiler.python")
    seen["detect-plain"] = (code, sorted(e["uid"] for e in data.get("envs", [])), data.get("error"))
    for tags in TWIN_TAGS:
        code, data = ckx_json(home, "install", "package", f"--tags={tags}", "--offline")
        seen[f"install --tags={tags}"] = (code, (data.get("package") or {}).get("cid"), data.get("status"),
                                          data.get("env_uid"), data.get("error"))
    for alias in TWIN_ALIASES:
        code, data = ckx_json(home, "install", f"package:{alias}", "--offline")
        seen[f"install package:{alias}"] = (code, (data.get("package") or {}).get("cid"), data.get("status"),
                                            data.get("env_uid"), data.get("error"))
    ctx = context(home)
    try:
        seen["venv template"] = template_requirements(ctx, "mlperf-inference")
    finally:
        ctx.close()
    for name in (ONNX, CK_ONNX):
        code, data = ckx_json(home, "run", name, "--cmd_key=accuracy-offline", "--offline")
        result = data.get("result") or {}
        seen[f"run {name}"] = (code, (data.get("choices") or {}).get("program"),
                               {k: (v.get("package"), v.get("env_uid")) for k, v in (data.get("choices") or {}).get("deps", {}).items()},
                               (result.get("accuracy") or {}).get("good"), (result.get("accuracy") or {}).get("total"),
                               data.get("error"))
    return seen


@pytest.fixture(scope="module")
def before_after(ck_mlops_url, tmp_path_factory) -> tuple[Path, dict, dict]:
    """One home: the commands run once (installing what they install), observed, ck-mlops pulled into the
    home, the same commands observed again."""
    home = tmp_path_factory.mktemp("coexist-home")
    observe(home)
    before = observe(home)
    pull_ck_mlops(home, ck_mlops_url)
    after = observe(home)
    return home, before, after


@pytest.fixture(scope="module")
def pulled_home(before_after) -> Path:
    return before_after[0]


@pytest.fixture
def pulled_ctx(pulled_home, monkeypatch):
    monkeypatch.setenv("CKX_HOME", str(pulled_home))
    ctx = context(pulled_home)
    yield ctx
    ctx.close()


@pytest.mark.slow
@needs_ck_mlops
def test_the_pull_brings_ck_mlops_entries_that_clash_with_built_in_ones(pulled_home):
    code, data = ckx_json(pulled_home, "list")
    assert code == 0 and data["modules"]["package"] > 558
    code, data = ckx_json(pulled_home, "search", "soft:compiler.python")
    assert sorted(e["repo"] for e in data["entries"]) == ["builtin", CK_REPO]
    code, data = ckx_json(pulled_home, "search", "package", "--tags=lib,python-package,numpy")
    assert {e["repo"] for e in data["entries"]} == {"builtin", CK_REPO}


@pytest.mark.slow
@needs_ck_mlops
@pytest.mark.parametrize("command", ["detect", "detect-plain", *(f"install --tags={t}" for t in TWIN_TAGS),
                                     *(f"install package:{a}" for a in TWIN_ALIASES), "venv template",
                                     f"run {ONNX}", f"run {CK_ONNX}"])
def test_pulling_ck_mlops_changes_no_result(before_after, command):
    _, before, after = before_after
    assert after[command] == before[command]


@pytest.mark.slow
@needs_ck_mlops
def test_the_observed_commands_worked_before_the_pull(before_after):
    _, before, _ = before_after
    assert before["detect"][0] == 0 and before["detect"][1][0][1]
    for tags in TWIN_TAGS:
        code, cid, status, _, error = before[f"install --tags={tags}"]
        assert code == 0 and cid.startswith("builtin:package:") and status in ("already-available", "already-installed"), error
    for alias in TWIN_ALIASES:
        code, cid, status, _, error = before[f"install package:{alias}"]
        assert code == 0 and cid == f"builtin:package:{alias}", error
    assert any(r.startswith("numpy") for r in before["venv template"])
    for name in (ONNX, CK_ONNX):
        code, program, deps, good, total, error = before[f"run {name}"]
        assert code == 0, error
        assert program == "image-classification-onnx-cpu" and total == 6 and good >= 4
        assert deps["python"][1]


@pytest.mark.slow
@needs_ck_mlops
def test_the_main_job_prints_its_accuracy_line_after_the_pull(pulled_home):
    proc = ckx(pulled_home, "run", ONNX, "--cmd_key=accuracy-offline", "--offline")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ACCURACY_LINE.search(proc.stdout)
    assert CK_REPO not in proc.stderr  # no clash, no warning about ck-mlops entries


@pytest.mark.slow
@needs_ck_mlops
def test_an_already_available_package_is_not_installed_again_after_the_pull(pulled_home):
    proc = ckx(pulled_home, "install", "package", "--tags=lib,python-package,numpy")
    assert proc.returncode == 0, proc.stderr
    assert "builtin:package:lib-python-numpy" in proc.stdout
    assert "already" in proc.stdout and "installed builtin" not in proc.stdout
    assert not list((pulled_home / "tools").glob("lib-python-numpy*"))


# -- CK variations and versions as tags ------------------------------------------------------------
@pytest.mark.slow
@needs_ck_mlops
@pytest.mark.parametrize("tags, package, variation, version", [
    ("lib,python-package,onnxruntime-cpu,1.6.0", "lib-python-onnxruntime-cpu", "1.6.0", "1.6.0"),
    ("imagenet,2012,aux,from.berkeley", "imagenet-2012-aux", "from.berkeley", "2012"),
    ("tool,cmake,src,v3.19.5", "tool-cmake-src", "v3.19.5", "3.19.5"),
    ("tool,cmake,src,3.18.2", "tool-cmake-src", "v3.18.2", "3.18.2"),
    ("lib,python-package,numpy,v1.18.5", "lib-python-numpy", "v1.18.5", "1.18.5"),
])
def test_a_tag_naming_a_ck_variation_or_version_selects_it(pulled_ctx, tags, package, variation, version):
    candidates = find_candidates(pulled_ctx, tags=tags)
    assert [(c.record.cid, c.variation) for c in candidates] == [(f"{CK_REPO}:package:{package}", variation)]
    assert candidates[0].version == version
    assert choose_candidate(pulled_ctx, candidates, asked=tags) is candidates[0]


@pytest.mark.slow
@needs_ck_mlops
def test_ck_variation_options_and_defaults_keep_working(pulled_ctx):
    picked = find_candidates(pulled_ctx, alias="lib-python-onnxruntime-cpu", repo=CK_REPO, variation="1.7.0")
    assert [c.variation for c in picked] == ["1.7.0"]
    assert picked[0].meta["customize"]["install_env"]["PACKAGE_VERSION"] == "1.7.0"
    assert [c.variation for c in find_candidates(pulled_ctx, alias="tool-cmake-src", version="3.17.4")] == ["v3.17.4"]
    every = find_candidates(pulled_ctx, alias="lib-python-onnxruntime-cpu", repo=CK_REPO)
    assert len(every) == 5
    assert choose_candidate(pulled_ctx, every, asked="package:lib-python-onnxruntime-cpu").variation == "latest"
    cmake = find_candidates(pulled_ctx, tags="tool,cmake,src")
    assert choose_candidate(pulled_ctx, cmake, asked="tags").variation == "v3.19.5"  # its on_by_default


# -- naming a repo resolves ------------------------------------------------------------------------
@pytest.mark.slow
@needs_ck_mlops
def test_repo_prefixed_names_resolve_after_the_pull(pulled_home, pulled_ctx):
    ck = choose_candidate(pulled_ctx, find_candidates(pulled_ctx, alias="lib-python-numpy", repo=CK_REPO), asked="x")
    assert ck.record.repo == CK_REPO and ck.ck_format
    code, data = ckx_json(pulled_home, "install", "builtin:package:lib-python-numpy", "--offline")
    assert code == 0 and data["package"]["cid"] == "builtin:package:lib-python-numpy"
    code, data = ckx_json(pulled_home, "detect", "builtin:soft:compiler.python", f"--full_path={sys.executable}")
    assert code == 0 and data["envs"]
    proc = ckx(pulled_home, "detect", f"{CK_REPO}:soft:compiler.python")
    assert proc.returncode == 2 and "CK's format" in proc.stderr


# -- CK-format programs ----------------------------------------------------------------------------
@pytest.mark.slow
@needs_ck_mlops
@pytest.mark.parametrize("name, native", [
    ("mlperf-inference-bench-image-classification-tvm-onnx-cpu", "image-classification-tvm-cpu"),
    ("mlperf-inference-bench-image-classification-pytorch-onnx-cpu", "image-classification-pytorch-cpu"),
    ("mlperf-inference-bench-image-classification-tensorflow-cpu", "image-classification-tf-cpu"),
    (f"{CK_REPO}:program:mlperf-inference-bench-image-classification-onnx-cpu", "image-classification-onnx-cpu"),
])
def test_a_ck_program_names_the_native_program_doing_its_job(pulled_home, name, native):
    target = name if ":" in name else f"program:{name}"
    proc = ckx(pulled_home, "run", target, "--cmd_key=accuracy-offline", "--offline")
    assert proc.returncode == 2
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "CK's format, which ckx does not run" in error[0]
    assert f"the native program {native} does the same job" in error[0]
    assert f"ckx run program:{native} --cmd_key=accuracy-offline" in error[0]
    assert "Traceback" not in proc.stderr and "uid' is a required property" not in proc.stderr


@pytest.mark.slow
@needs_ck_mlops
def test_ck_programs_without_an_exact_native_twin_say_so_in_one_line(pulled_home):
    proc = ckx(pulled_home, "run", "program:mlperf-inference-bench-image-classification-onnx-gpu")
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1
    assert "no native program for onnxruntime on gpu" in lines[0] and "image-classification-onnx-cpu" in lines[0]
    proc = ckx(pulled_home, "run", "program:image-classification-onnx-py")
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "no native ckx program does its job" in lines[0]
    assert "program.template" not in proc.stderr and "required property" not in proc.stderr


# -- twins in the user's own repos, in pulled native repos, and from archives ----------------------
NUMPY_UID = "aaaa000000000001"


def numpy_twin(**changes) -> dict:
    return twin(builtin_meta("packages", "lib-python-numpy"), NUMPY_UID, **changes)


def test_a_clash_of_equal_standing_is_refused_naming_both_repos_and_a_form_that_resolves(ckx_home, tmp_path):
    mine = add_user_repo(ckx_home, tmp_path)
    write_json(mine / "packages" / "lib-python-numpy" / "meta.json", numpy_twin())
    proc = ckx(ckx_home, "install", "package", "--tags=lib,python-package,numpy", "--offline")
    assert proc.returncode == 3, proc.stderr
    assert "in repos builtin and mine" in proc.stderr
    hint = next(line for line in proc.stderr.splitlines() if line.startswith("hint:"))
    assert "builtin:package:lib-python-numpy" in hint and "mine:package:lib-python-numpy" in hint
    assert "ckx install package:ALIAS" not in proc.stderr  # the old hint went in a circle
    code, data = ckx_json(ckx_home, "install", "builtin:package:lib-python-numpy", "--offline")
    assert code == 0 and data["package"]["cid"] == "builtin:package:lib-python-numpy"


def test_an_equal_standing_clash_offers_both_on_a_terminal(ctx, ckx_home, tmp_path):
    mine = add_user_repo(ckx_home, tmp_path)
    write_json(mine / "packages" / "lib-python-numpy" / "meta.json", numpy_twin())
    asked = []

    class Picker:
        def choose(self, question, options, default):
            asked.append(options)
            return 1

        def __getattr__(self, name):
            return lambda *a, **k: None

    terminal = Context(Home(ckx_home), reporter=Picker(), interactive=True)
    try:
        chosen = choose_package(terminal, tags="lib,python-package,numpy")
    finally:
        terminal.close()
    assert [o.split(" ")[0] for o in asked[0]] == ["builtin:package:lib-python-numpy", "mine:package:lib-python-numpy"]
    assert chosen.record.repo == "mine"


def test_soft_and_program_clashes_of_equal_standing_hint_at_forms_that_resolve(ckx_home, tmp_path):
    mine = add_user_repo(ckx_home, tmp_path)
    shutil.copytree(ROOT / "soft" / "compiler.python", mine / "soft" / "compiler.python")
    meta = builtin_meta("soft", "compiler.python")
    write_json(mine / "soft" / "compiler.python" / "meta.json", twin(meta, "aaaa000000000002"))
    proc = ckx(ckx_home, "detect", "soft:compiler.python", f"--full_path={sys.executable}")
    assert proc.returncode == 3 and "builtin:soft:compiler.python" in proc.stderr
    assert "mine:soft:compiler.python" in proc.stderr
    code, data = ckx_json(ckx_home, "detect", "builtin:soft:compiler.python", f"--full_path={sys.executable}")
    assert code == 0 and data["envs"][0]["soft"] == "compiler.python"

    program = builtin_meta("programs", "image-classification-onnx-cpu")
    write_json(mine / "programs" / "image-classification-onnx-cpu" / "meta.json", twin(program, "aaaa000000000003"))
    proc = ckx(ckx_home, "run", ONNX, "--cmd_key=no-such-key")
    assert proc.returncode == 3 and "builtin:program:image-classification-onnx-cpu" in proc.stderr
    proc = ckx(ckx_home, "run", f"builtin:{ONNX}", "--cmd_key=no-such-key")
    # the name resolved: the error is about the command key, listing the program's own keys
    assert proc.returncode == 2 and "accuracy-offline" in proc.stderr and "matches 2" not in proc.stderr
    proc = ckx(ckx_home, "run", f"mine:{CK_ONNX}", "--cmd_key=no-such-key")
    assert proc.returncode == 2 and "accuracy-offline" in proc.stderr  # its base comes from the built-in repo


def make_native_remote(root: Path, entries: dict[str, dict]) -> str:
    """A native ckx repo in a git repository on disk; ``entries`` maps ``packages/ALIAS`` to a meta."""
    write_json(root / "ckx-repo.json", {"name": "others", "uid": "bbbb000000000000", "schema_version": 1})
    for where, meta in entries.items():
        write_json(root / where / "meta.json", meta)
        (root / where / "install.py").write_text("def install(install_dir):\n    raise SystemExit('ran')\n")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "others"]):
        subprocess.run([*GIT, *args], cwd=root, check=True, env=git_env(), capture_output=True, timeout=60)
    return root.as_uri()


def test_a_pulled_default_package_never_shadows_a_built_in_one(ckx_home, tmp_path):
    url = make_native_remote(tmp_path / "others", {"packages/lib-python-numpy": numpy_twin(default=True)})
    proc = ckx(ckx_home, "pull", "repo", f"--url={url}")
    assert proc.returncode == 0, proc.stderr
    code, data = ckx_json(ckx_home, "install", "package", "--tags=lib,python-package,numpy", "--offline")
    assert code == 0 and data["package"]["cid"] == "builtin:package:lib-python-numpy"
    code, data = ckx_json(ckx_home, "install", "others:package:lib-python-numpy", "--offline")
    if code == 0:  # naming the repo reaches the pulled package
        assert data["package"]["cid"] == "others:package:lib-python-numpy"
    else:
        assert "others:package:lib-python-numpy" in data["error"], data
    # deleting does not rank: the name is ambiguous there, and nothing is removed
    proc = ckx(ckx_home, "rm", "package:lib-python-numpy", "--force")
    assert proc.returncode == 3 and "others:package:lib-python-numpy" in proc.stderr
    assert (ckx_home / "repos" / "others" / "packages" / "lib-python-numpy" / "meta.json").is_file()


def marked_model(archive: str) -> dict:
    """The attack: a package with the alias and tags of the main job's model, marked the default."""
    meta = twin(builtin_meta("packages", "model-efficientnet-lite0-onnx"), "cccc000000000001", default=True)
    meta["source"] = {"kind": "hook"}
    return mark_foreign(meta, "unzipped", archive)


def test_an_unzipped_default_package_in_local_never_shadows_a_built_in_one(ckx_home, ctx):
    alias = "model-efficientnet-lite0-onnx"
    entry = ckx_home / "repos" / "local" / "packages" / alias
    ctx.registry  # the local repo exists
    write_json(entry / "meta.json", marked_model("/tmp/evil.zip"))
    (entry / "install.py").write_text("def install(install_dir):\n    raise SystemExit('the archive ran code')\n")
    tags = builtin_meta("programs", "image-classification-onnx-cpu")["deps"]["model"]["offline_tags"]
    candidates = find_candidates(ctx, tags=tags)
    assert {c.record.repo for c in candidates} == {"builtin", "local"}
    assert candidates[0].record.repo == "builtin"
    assert choose_candidate(ctx, candidates, asked=tags).record.cid == f"builtin:package:{alias}"
    # without the mark the same entry is the user's own, and its "default": true counts
    meta = json.loads((entry / "meta.json").read_text())
    del meta["provenance"]
    write_json(entry / "meta.json", meta)
    ctx.expire()
    assert choose_candidate(ctx, find_candidates(ctx, tags=tags), asked=tags).record.repo == "local"


def test_the_archive_default_attack_through_unzip_is_held(ckx_home, tmp_path):
    alias = "model-efficientnet-lite0-onnx"
    meta = marked_model("x")
    del meta["provenance"]
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"packages/{alias}/meta.json", json.dumps(meta))
        zf.writestr(f"packages/{alias}/install.py", "def install(install_dir):\n    raise SystemExit('ran')\n")
    proc = ckx(ckx_home, "unzip", "repo:local", f"--zip={archive}", "--allow_code")
    assert proc.returncode == 0, proc.stderr
    stored = json.loads((ckx_home / "repos" / "local" / "packages" / alias / "meta.json").read_text())
    assert foreign_origin(stored) == "unzipped"
    ctx = context(ckx_home)
    try:
        tags = builtin_meta("programs", "image-classification-onnx-cpu")["deps"]["model"]["offline_tags"]
        assert choose_candidate(ctx, find_candidates(ctx, tags=tags), asked=tags).record.repo == "builtin"
    finally:
        ctx.close()


def test_mark_foreign_replaces_what_an_archive_says_of_itself():
    meta = {"alias": "x", "provenance": {"origin": "builtin"}}
    assert foreign_origin(meta) == "unzipped"  # any mark lowers the standing; none raises it
    assert mark_foreign(meta, "unzipped", "/tmp/a.zip") is meta
    assert meta["provenance"] == {"origin": "unzipped", "source": "/tmp/a.zip"}
    assert foreign_origin(mark_foreign({}, "pulled", "https://example.org/r.git")) == "pulled"
    assert foreign_origin({"alias": "x"}) is None
    with pytest.raises(ValueError):
        mark_foreign({}, "builtin", "x")


# -- native variations and versions as tags --------------------------------------------------------
def test_a_tag_naming_a_native_variation_or_version_selects_it(ckx_home, tmp_path, ctx):
    mine = add_user_repo(ckx_home, tmp_path)
    write_json(mine / "packages" / "tool-demo" / "meta.json", {
        "uid": "dddd000000000001", "alias": "tool-demo", "tags": ["tool", "demo"], "schema_version": 1,
        "source": {"kind": "hook"}, "default_variation": "small",
        "variations": {"small": {"version": "1.0"}, "big": {"version": "2.4.1"}}})
    pick = lambda tags: [(c.variation, c.version) for c in find_candidates(ctx, tags=tags)]  # noqa: E731
    assert pick("tool,demo,big") == [("big", "2.4.1")]
    assert pick("tool,demo,v2.4.1") == [("big", "2.4.1")]
    assert pick("tool,demo,2.4.1") == [("big", "2.4.1")]
    assert pick("tool,demo,1") == [("small", "1.0")]  # a version compares as a version
    assert pick("tool,demo,huge") == [] and pick("tool,demo,3.0") == []
    assert pick("tool,demo") == [("small", "1.0"), ("big", "2.4.1")]
    both = find_candidates(ctx, tags="tool,demo")
    assert choose_candidate(ctx, both, asked="tags tool,demo").variation == "small"
    assert [c.variation for c in find_candidates(ctx, tags="tool,demo", variation="big")] == ["big"]
    assert [c.variation for c in find_candidates(ctx, alias="tool-demo", version="2.4.1")] == ["big"]
    write_json(mine / "packages" / "tool-nodefault" / "meta.json", {
        "uid": "dddd000000000002", "alias": "tool-nodefault", "tags": ["tool", "nodefault"], "schema_version": 1,
        "source": {"kind": "hook"}, "variations": {"a": {"version": "1.0"}, "b": {"version": "2.0"}}})
    ctx.expire()
    with pytest.raises(Ambiguous) as info:
        choose_package(ctx, tags="tool,nodefault")
    assert "--variation=NAME" in info.value.hint and "a, b" in info.value.hint
    assert choose_package(ctx, tags="tool,nodefault,b").variation == "b"
