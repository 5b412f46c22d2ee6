"""The layers of the package, as import-linter contracts in setup.cfg, and the action table's targets."""
from __future__ import annotations

import ast
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




def _function_local_imports(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each import statement inside a function or method of ``path``.

    The text is the statement's line with the comment block right above it, where its reason goes.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    start = inner.lineno - 1
                    while start > 0 and lines[start - 1].strip().startswith(("#", "from ", "import ")):
                        start -= 1
                    found.append((inner.lineno, " ".join(line.strip() for line in lines[start:inner.lineno])))
    return sorted(set(found))


def test_function_local_imports_say_why():
    # A function-local import either breaks a cycle (a design smell: the layers forbid it) or keeps
    # start-up light; the second kind carries its reason as a comment on the same line.
    unexplained = []
    for path in sorted((ROOT / "ckx").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        unexplained += [f"{rel}:{line}: {text}" for line, text in _function_local_imports(path) if "#" not in text]
    assert unexplained == []


def test_the_version_command_imports_no_heavy_module():
    # `ckx version` (and every command's start-up) must not pay for the network, validation, YAML,
    # the index or numerics: those modules are imported where they are used.
    script = ("import sys; from ckx.cli.main import main; code = main(['version']); "
              "print(' '.join(sorted(m for m in sys.modules if '.' not in m)))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "ckx" in loaded
    assert loaded.isdisjoint({"requests", "urllib3", "jsonschema", "referencing", "yaml", "numpy", "sqlite3",
                              "filelock", "tqdm"}), loaded
