"""The layers of the package, as import-linter contracts in setup.cfg, and the action table's targets."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ckx.api import ACTIONS

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    # lint-imports reads the contracts from setup.cfg; run it as its own process so that nothing this test
    # session imported can hide an import, and with no cache so that it reads the tree as it is now.
    script = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: f"{a.name}:{a.module or '*'}")
def test_every_action_target_is_a_function(action):
    handler = action.handler()
    assert callable(handler), action.target
    assert handler.__module__ == action.target.split(":")[0]
