"""Test helper: a package where a --system-site-packages venv and the interpreter it builds on both see it.

``python -m venv`` builds every venv on a base interpreter: the running one under a system-wide install,
its base when the suite itself runs in a venv. Neither may be changed by a test, so the package goes to
that base interpreter's user site under a temporary ``PYTHONUSERBASE``: the base sees it, and so does
each of its venvs that includes system site packages (Python's site module adds the user site to those).
"""
from __future__ import annotations

import json
import site
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from wheels import build_wheel

# The running interpreter is a venv: ``python -m venv`` builds new venvs on its base, not on it.
IN_VENV = sys.prefix != sys.base_prefix

DEMO_SOFT = {
    "alias": "lib.python.ckxdemo", "uid": "5e1f00000000c0de", "schema_version": 1, "name": "Python package ckxdemo",
    "tags": ["lib", "python-package", "ckxdemo"], "env_prefix": "CK_ENV_PYTHON_PACKAGE_CKXDEMO",
    "detect": {"kind": "module", "module": "ckxdemo_pkg", "distributions": ["ckxdemo-pkg"]},
    "deps": {"python": {"tags": "compiler,python", "sort": 0}},
}


@dataclass(frozen=True)
class BaseSite:
    """The base interpreter and the demo package installed in its (temporary) user site."""

    python: Path
    user_site: Path
    package: Path


def base_python() -> Path:
    """The interpreter ``python -m venv`` builds on when run by this one (what venv itself uses)."""
    return Path(getattr(sys, "_base_executable", None) or sys.executable)


def install_in_base_user_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BaseSite:
    """Unpack the demo wheel into the base interpreter's user site under a temporary PYTHONUSERBASE."""
    python = base_python()
    user_base = tmp_path / "userbase"
    monkeypatch.setenv("PYTHONUSERBASE", str(user_base))
    monkeypatch.delenv("PYTHONNOUSERSITE", raising=False)
    code = "import json, site; print(json.dumps([site.getusersitepackages(), site.ENABLE_USER_SITE]))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    user_site, enabled = json.loads(out)
    if not enabled:
        pytest.skip(f"{python} has user site-packages disabled: no place for a package that its venvs see")
    user_site = Path(user_site)
    assert user_site.is_relative_to(user_base), user_site
    with zipfile.ZipFile(build_wheel(tmp_path / "wheels")) as wheel:
        wheel.extractall(user_site)
    # This process computed its user site at start-up; let it describe itself with the new one.
    monkeypatch.setattr(site, "USER_BASE", None)
    monkeypatch.setattr(site, "USER_SITE", None)
    return BaseSite(python, user_site, user_site / "ckxdemo_pkg")


def add_demo_soft(repo: Path) -> None:
    """Write the soft entry that detects the demo package into the native repo at ``repo``."""
    entry = repo / "soft" / DEMO_SOFT["alias"]
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "meta.json").write_text(json.dumps(DEMO_SOFT, indent=1))
