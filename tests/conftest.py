"""Shared fixtures: a temporary CKX_HOME for every test, CLI runners, and a CK-format repo builder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
# Tests import entry code (the harness) in process: leave no bytecode in the repo's entries.
sys.dont_write_bytecode = True

from httpserver import http_server  # noqa: E402,F401  (the loopback download server fixture)


@pytest.fixture(autouse=True)
def ckx_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own CKX_HOME: no test touches the user's real home."""
    home = tmp_path_factory.mktemp("ckx-home")
    monkeypatch.setenv("CKX_HOME", str(home))
    for name in ("CKX_TOOLS", "CKX_URL_MAP", "CKX_OFFLINE", "CKX_QUIET", "CKX_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def ctx(ckx_home):
    """A non-interactive Context on the temporary home."""
    from ckx.store.context import Context
    from ckx.core.home import Home

    context = Context(Home(ckx_home), quiet=True, interactive=False)
    yield context
    context.close()


def _run(args, *, home: Path, input_text: str | None = None, env: dict | None = None, cwd: Path | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env["CKX_HOME"] = str(home)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "ckx", *map(str, args)], capture_output=True, text=True,
        input=input_text if input_text is not None else "", env=full_env, cwd=cwd, timeout=timeout,
    )


@pytest.fixture
def cli(ckx_home):
    """Run ``python -m ckx ARGS`` in a subprocess (stdin is not a TTY) on the temporary home."""

    def run(*args, **kwargs) -> subprocess.CompletedProcess:
        return _run(args, home=ckx_home, **kwargs)

    return run


@pytest.fixture
def cli_json(cli):
    """Run ckx with --json and return (exit code, parsed document)."""

    def run(*args, **kwargs):
        proc = cli(*args, "--json", **kwargs)
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"not JSON: {proc.stdout!r}\nstderr: {proc.stderr}")
        return proc.returncode, data

    return run


def make_ck_repo(root: Path, name: str, entries: dict[str, list[tuple[str | None, str, dict]]],
                 *, uid: str = "46644adb4c6670dd", deps: list[str] = ()) -> Path:
    """Build a repo in CK's exact on-disk layout.

    ``entries`` maps module alias -> [(entry alias or None, entry uid, meta)]. Module uids are CK's real ones
    where known.
    """
    from ckx.store.repo import CK_MODULE_UIDS

    root.mkdir(parents=True, exist_ok=True)
    (root / ".ckr.json").write_text(json.dumps({
        "data_uoa": name, "data_uid": uid, "data_alias": name, "data_name": name,
        "dict": {"shared": "git", "url": f"https://example.org/{name}.git",
                 "repo_deps": [{"repo_uoa": d} for d in deps]},
    }))
    (root / ".cm").mkdir(exist_ok=True)
    for module, items in entries.items():
        module_uid = CK_MODULE_UIDS.get(module, (module.encode().hex() + "0" * 16)[:16])
        (root / ".cm" / f"alias-a-{module}").write_text(module_uid + "\n")
        (root / ".cm" / f"alias-u-{module_uid}").write_text(module + "\n")
        mdir = root / module
        (mdir / ".cm").mkdir(parents=True, exist_ok=True)
        for alias, entry_uid, meta in items:
            edir = mdir / (alias or entry_uid)
            (edir / ".cm").mkdir(parents=True, exist_ok=True)
            (edir / ".cm" / "meta.json").write_text(json.dumps(meta, indent=1))
            (edir / ".cm" / "info.json").write_text(json.dumps({
                "backup_data_uid": entry_uid, "backup_module_uid": module_uid, "backup_module_uoa": module,
                "control": {"engine": "CK", "iso_datetime": "2021-05-01T10:00:00", "version": ["2", "5", "8"]},
                "data_name": alias or entry_uid}))
            (edir / ".cm" / "desc.json").write_text("{}")
            if alias:
                (mdir / ".cm" / f"alias-a-{alias}").write_text(entry_uid + "\n")
                (mdir / ".cm" / f"alias-u-{entry_uid}").write_text(alias + "\n")
    return root


@pytest.fixture
def ck_repo_factory(tmp_path):
    def build(name="ck-test", entries=None, **kwargs) -> Path:
        return make_ck_repo(tmp_path / name, name, entries or {}, **kwargs)

    return build
