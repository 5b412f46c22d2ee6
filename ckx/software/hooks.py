"""Helpers for code that entries carry (install.py, customize.py): load it, and run its helper scripts."""
from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path
from typing import Mapping, Sequence

from ckx.core.errors import CkxError, IntegrityError, NotFound

def load_source_module(path: Path, name: str) -> types.ModuleType:
    """Execute a Python file as a module named ``name`` without writing bytecode next to it.

    Entries live in repo checkouts, which ckx never writes into; the import system would leave a
    ``__pycache__`` directory there. Exceptions raised by the file's code propagate unchanged.
    """
    source = Path(path).read_bytes()
    code = compile(source, str(path), "exec", dont_inherit=True)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module  # for code that looks itself up while it runs (dataclasses, typing)
    try:
        exec(code, module.__dict__)
    finally:
        sys.modules.pop(name, None)
    return module


# Exit statuses the helper scripts of the built-in packages use.
EXIT_CHECK_FAILED = 3
EXIT_MISSING_INPUT = 4


def run_script(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    what: str,
    integrity_codes: Sequence[int] = (EXIT_CHECK_FAILED,),
    missing_codes: Sequence[int] = (EXIT_MISSING_INPUT,),
    hints: Mapping[int, str] | None = None,
) -> None:
    """Run a helper script (argv list, no shell) and raise a typed error when it fails.

    The error carries the script's last ``error: ...`` line (or the tail of its stderr). An exit status
    in ``integrity_codes`` raises IntegrityError, one in ``missing_codes`` NotFound, any other CkxError;
    ``hints`` maps an exit status to the hint to attach.
    """
    # Helper scripts import code from entries (the harness's model definition): never leave bytecode there.
    environment = {**env, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run(list(argv), env=environment, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CkxError(f"{what} did not finish within {timeout:g} s") from exc
    except OSError as exc:
        raise CkxError(f"cannot run {argv[0]} for {what}: {exc}") from exc
    if proc.returncode == 0:
        return
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line[len("error: "):] for line in lines if line.startswith("error: ")]
    message = errors[-1] if errors else "\n".join(lines[-15:]) or "no output"
    hint = (hints or {}).get(proc.returncode)
    if proc.returncode in integrity_codes:
        raise IntegrityError(f"{what}: {message}", hint=hint)
    if proc.returncode in missing_codes:
        raise NotFound(f"{what}: {message}", hint=hint)
    raise CkxError(f"{what} failed (exit status {proc.returncode}): {message}", hint=hint)
