"""A hook may not end ckx: sys.exit and KeyboardInterrupt inside a hook are failures that name it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pkgrepo import PackageRepo, assert_nothing_installed, env_records

from ckx.api import access
from ckx.software.hooks import HookAborted, call_hook, load_hooks
from interrupt import ctrl_c_reaches_child

ROOT = Path(__file__).resolve().parents[2]


def _cli_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CKX_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("CKX_DEBUG", None)
    return env


def _ckx(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ckx", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env=_cli_env(home), timeout=300)


@pytest.fixture
def repo(ctx, tmp_path) -> PackageRepo:
    return PackageRepo(ctx, tmp_path / "hookexit-repo")


def add_package(repo: PackageRepo, alias: str, hook: str) -> Path:
    return repo.add(alias, source={"kind": "hook"}, hook=hook) / "install.py"


HALF_WRITTEN = '''\
    import sys as _sys


    def install(*, install_dir):
        (install_dir / "half.bin").write_bytes(b"x" * 1000)
        {ending}
'''


@pytest.mark.parametrize("ending, said", [
    ("_sys.exit(0)", "called sys.exit(0)"),
    ("_sys.exit(3)", "called sys.exit(3)"),
    ("_sys.exit()", "called sys.exit()"),
    ("raise KeyboardInterrupt", "raised KeyboardInterrupt"),
    ("raise SystemExit('bye')", "called sys.exit('bye')"),
    ("raise GeneratorExit", "raised GeneratorExit"),
])
def test_an_install_hook_that_exits_fails_naming_it(repo, ckx_home, ending, said):
    hook_path = add_package(repo, "exits", HALF_WRITTEN.format(ending=ending))
    proc = _ckx(ckx_home, "install", "package:exits", "--json")
    assert proc.returncode != 0 and proc.returncode != 130, (proc.returncode, proc.stdout, proc.stderr)
    document = json.loads(proc.stdout)
    assert document["error_type"] == "HookAborted"
    assert str(hook_path) in document["error"] and "install()" in document["error"] and said in document["error"]
    assert "Traceback" not in proc.stderr
    assert_nothing_installed(ckx_home)


def test_an_install_py_that_exits_while_it_loads_fails_naming_it(repo, ckx_home):
    hook_path = add_package(repo, "exitsonload", '''\
        import sys as _sys

        _sys.exit(0)


        def install(*, install_dir):
            (install_dir / "never.txt").write_text("never")
    ''')
    proc = _ckx(ckx_home, "install", "package:exitsonload", "--json")
    assert proc.returncode != 0
    document = json.loads(proc.stdout)
    assert str(hook_path) in document["error"] and "while it loads" in document["error"]
    assert_nothing_installed(ckx_home)


def test_a_hook_that_exits_fails_in_process_too_and_the_interpreter_lives(ctx, repo, ckx_home):
    add_package(repo, "exitsinprocess", HALF_WRITTEN.format(ending="_sys.exit(0)"))
    ctx.index.refresh(["package"], force=True)
    result = access({"action": "install", "module": "package", "entry": "exitsinprocess"}, context=ctx)
    assert result["return"] != 0 and result["error_type"] == "HookAborted"
    assert_nothing_installed(ckx_home)


def test_a_detection_hook_that_exits_fails_naming_it(repo, ckx_home, tmp_path):
    marker = tmp_path / "thing.marker"
    marker.write_text("1.0\n")
    entry = repo.add("exitingsoft", source={"kind": "hook"}, module="soft",
                     detect={"kind": "marker", "files": [marker.name], "search_dirs": [str(tmp_path)]})
    (entry / "customize.py").write_text(textwrap.dedent('''\
        import sys as _sys


        def detect_version(*, full_path):
            _sys.exit(0)
    '''))
    proc = _ckx(ckx_home, "detect", "soft:exitingsoft", f"--full_path={marker}", "--json")
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    document = json.loads(proc.stdout)
    assert str(entry / "customize.py") in document["error"] and "detect_version()" in document["error"]
    assert [m for m in env_records(ckx_home) if m.get("soft") == "exitingsoft"] == []


def test_the_users_ctrl_c_during_a_hook_still_interrupts_ckx(repo, ckx_home, tmp_path):
    started = tmp_path / "hook-started"
    add_package(repo, "slow", f'''\
        import pathlib as _pathlib
        import time as _time


        def install(*, install_dir):
            (install_dir / "half.bin").write_bytes(b"x" * 1000)
            _pathlib.Path({str(started)!r}).write_text("started")
            _time.sleep(120)
    ''')
    proc = subprocess.Popen([sys.executable, "-m", "ckx", "install", "package:slow", "--json"], env=_cli_env(ckx_home),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ctrl_c_reaches_child)
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the hook never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (stdout, stderr)
    assert "interrupted" in stderr and "HookAborted" not in stdout
    assert_nothing_installed(ckx_home)


def test_ckx_run_whose_dependency_hook_exits_fails_and_runs_nothing(repo, ckx_home, tmp_path):
    hook_path = add_package(repo, "exitingdep", HALF_WRITTEN.format(ending="_sys.exit(0)"))
    ran = tmp_path / "program-ran"
    program = repo.root / "programs" / "needsdep"
    program.mkdir(parents=True)
    (program / "meta.json").write_text(json.dumps({
        "alias": "needsdep", "uid": "70e00000000000e1", "schema_version": 1, "tags": ["needsdep"],
        "argv": ["{python}", "-c", f"open({str(ran)!r}, 'w').write('ran')"], "run_cmds": {"run": {}},
        "deps": {"thing": {"tags": "exitingdep"}},
    }))
    proc = _ckx(ckx_home, "run", "program:needsdep", "--cmd_key=run", "--json")
    assert proc.returncode not in (0, 130), (proc.stdout, proc.stderr)
    document = json.loads(proc.stdout)
    assert document["error_type"] == "HookAborted" and str(hook_path) in document["error"]
    assert not ran.exists()
    assert_nothing_installed(ckx_home)


def test_a_hook_called_outside_the_main_thread_is_guarded_too(tmp_path):
    # The web service runs actions in worker threads, where no signal handler can be installed.
    path = tmp_path / "customize.py"
    path.write_text("def setup_env(*, version):\n    raise KeyboardInterrupt\n")
    hook = load_hooks(path, {"setup_env": {"version"}}, file_label="a customize.py")["setup_env"]
    caught: list[BaseException] = []

    def work() -> None:
        try:
            call_hook(hook, {"version": "1"})
        except BaseException as exc:  # noqa: BLE001 - the test inspects whatever came out
            caught.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(30)
    assert len(caught) == 1 and isinstance(caught[0], HookAborted)
    assert str(path) in str(caught[0]) and "setup_env()" in str(caught[0])
