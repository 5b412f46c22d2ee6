"""Code carried by entries: loaded without leaving bytecode in the repo; helper scripts' exit statuses."""
from __future__ import annotations

import sys

import pytest

from ckx.core.errors import CkxError, IntegrityError, NotFound
from ckx.software.hooks import load_source_module, run_script


def test_loading_entry_code_writes_no_bytecode_next_to_it(tmp_path):
    entry = tmp_path / "packages" / "demo"
    entry.mkdir(parents=True)
    (entry / "install.py").write_text(
        "from dataclasses import dataclass\n\n@dataclass\nclass _Thing:\n    x: int = 1\n\n"
        "def install():\n    return _Thing().x\n")
    module = load_source_module(entry / "install.py", "_ckx_test_hook")
    assert module.install() == 1
    assert module.__file__ == str(entry / "install.py")
    assert "_ckx_test_hook" not in sys.modules
    assert sorted(p.name for p in entry.iterdir()) == ["install.py"]


def test_loading_propagates_the_files_own_errors(tmp_path):
    path = tmp_path / "customize.py"
    path.write_text("raise ValueError('broken on purpose')\n")
    with pytest.raises(ValueError, match="broken on purpose"):
        load_source_module(path, "_ckx_test_broken")
    path.write_text("def f(:\n")
    with pytest.raises(SyntaxError):
        load_source_module(path, "_ckx_test_syntax")


@pytest.mark.parametrize(("status", "error"), [(3, IntegrityError), (4, NotFound), (1, CkxError)])
def test_run_script_maps_exit_statuses_and_keeps_the_last_error_line(status, error):
    code = f"import sys; print('noise', file=sys.stderr); print('error: the real reason', file=sys.stderr); sys.exit({status})"
    with pytest.raises(error, match="demo step: the real reason|demo step failed .*the real reason") as info:
        run_script([sys.executable, "-c", code], env={}, timeout=60, what="demo step", hints={status: "do this"})
    assert info.value.hint == "do this"


def test_run_script_never_writes_bytecode(tmp_path):
    (tmp_path / "helper_mod.py").write_text("VALUE = 1\n")
    code = "import sys; sys.path.insert(0, sys.argv[1]); import helper_mod"
    run_script([sys.executable, "-c", code, str(tmp_path)], env={}, timeout=60, what="import")
    assert not (tmp_path / "__pycache__").exists()
