"""`kill -9` of a pull: its git dies with it, and the next pull removes the staging directory it left."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ckx.sharing.staging import LOCK_NAME, clean_stale, staging_dir
from gitenv import GIT_IDENTITY, hermetic_git  # noqa: F401  (the fixture keeps git hermetic)

ROOT = Path(__file__).resolve().parents[2]
GIT = shutil.which("git")
pytestmark = pytest.mark.skipif(GIT is None or not sys.platform.startswith("linux"),
                                reason="needs git and Linux's /proc")


def make_remote(root: Path) -> str:
    """A native repo in git with an entry and 2 MB of data; its file:// URL."""
    (root / "experiments/e1").mkdir(parents=True)
    (root / "ckx-repo.json").write_text(json.dumps({"name": "slow", "uid": "5105105105105100", "schema_version": 1}))
    (root / "experiments/e1/meta.json").write_text(json.dumps(
        {"uid": "5105105105105101", "alias": "e1", "tags": ["x"], "schema_version": 1}))
    (root / "experiments/e1/data.bin").write_bytes(os.urandom(2 << 20))
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "initial"]):
        subprocess.run([GIT, *GIT_IDENTITY, *args], cwd=root, check=True, capture_output=True, timeout=60)
    return root.as_uri()


def slow_git(bindir: Path, ready: Path) -> None:
    """A ``git`` earlier on PATH: a clone runs the real git, says so in ``ready``, then hangs (a slow network)."""
    bindir.mkdir()
    script = bindir / "git"
    script.write_text(f"""#!{sys.executable}
import os, subprocess, sys, time
args = sys.argv[1:]
if "clone" in args:
    code = subprocess.call([{GIT!r}, *args])
    with open({str(ready)!r} + ".tmp", "w") as out:
        out.write(str(os.getpid()))
    os.rename({str(ready)!r} + ".tmp", {str(ready)!r})
    time.sleep(300)
    sys.exit(code)
os.execv({GIT!r}, [{GIT!r}, *args])
""")
    script.chmod(0o755)


def running(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie is dead: it only waits to be reaped)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return text.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if text in cmdline and running(int(proc.name)):
            found.append(int(proc.name))
    return found


def ckx_env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CKX_HOME": str(home), "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), **extra})
    return env


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_killed_pull_leaves_no_git_and_the_next_pull_cleans_up(how, tmp_path, ckx_home):
    url = make_remote(tmp_path / "remote")
    ready = tmp_path / "git-ready"
    slow_git(tmp_path / "bin", ready)
    env = ckx_env(ckx_home, PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    ckx = subprocess.Popen([sys.executable, "-m", "ckx", "pull", "repo", f"--url={url}"], env=env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert ckx.poll() is None, "ckx ended before git was slowed down"
            assert time.monotonic() < deadline, "the clone never started"
            time.sleep(0.05)
        git_pid = int(ready.read_text())
        staging = [p for p in (ckx_home / "repos").iterdir() if p.name.startswith(".pull-")]
        assert staging and any((p / "checkout/experiments/e1/data.bin").is_file() for p in staging)
        assert running(git_pid)
        os.kill(ckx.pid, how)
        ckx.wait(timeout=30)
    finally:
        if ckx.poll() is None:
            ckx.kill()
            ckx.wait()
    deadline = time.monotonic() + 10
    while running(git_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    outlived = running(git_pid)
    if outlived:  # leave no orphan behind, even when failing
        os.kill(git_pid, signal.SIGKILL)
    assert not outlived, "git outlived the ckx that started it"
    assert processes_mentioning(str(ckx_home / "repos")) == []
    if how == signal.SIGKILL:
        assert all(p.exists() for p in staging)  # what the kill left, until the next pull
    assert not (ckx_home / "repos.json").exists() or json.loads((ckx_home / "repos.json").read_text())["repos"] == {}
    proc = subprocess.run([sys.executable, "-m", "ckx", "pull", "repo", f"--url={url}"], env=ckx_env(ckx_home),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in (ckx_home / "repos").iterdir() if p.name.startswith(".")] == []
    assert json.loads((ckx_home / "repos.json").read_text())["repos"]["slow"]["origin"] == "pulled"


def test_stale_staging_is_removed_and_live_staging_kept(tmp_path):
    parent = tmp_path / "repos"
    parent.mkdir()
    # Left by a process that is gone: its lock file is not held by anyone.
    dead_locked = parent / ".pull-999999-abc"
    (dead_locked / "checkout").mkdir(parents=True)
    (dead_locked / LOCK_NAME).write_text("999999\n")
    # Left by a process that is gone, killed before it could make its lock file.
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_unlocked = parent / f".pull-{int(finished.stdout)}-def"
    dead_unlocked.mkdir()
    other_kind = parent / ".unzip-999999-ghi"
    other_kind.mkdir()
    with staging_dir(parent, "pull") as live:
        assert not dead_locked.exists() and not dead_unlocked.exists()
        assert other_kind.exists()  # another kind is left to its own clean-up
        assert clean_stale(parent, "pull") == [] and live.exists()  # held by this process: kept
    assert not live.exists()
