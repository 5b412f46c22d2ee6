"""Tests for ckx.software.environment: one path-variable rule, one strict placeholder engine, one boolean rule."""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest

from ckx.core.errors import MetaError
from ckx.runs.program_entry import assemble_env, build_command, load_program
from ckx.software.environment import PATH_VARIABLES, apply_layer, env_text, merge_env, render
from ckx.software.envs import render_env_script
from ckx.software.install import dependency_environment
from ckx.software.resolve import ResolvedDep, install
from ckx.store.repo_actions import add_repo

BASE = {"PATH": "/usr/bin:/bin", "CPLUS_INCLUDE_PATH": "/usr/include/c++", "LIBRARY_PATH": "/usr/lib", "KEEP": "k"}
DEP_ENV = {"PATH": "/dep/bin:$PATH", "CPLUS_INCLUDE_PATH": "/dep/include:${CPLUS_INCLUDE_PATH}",
           "C_INCLUDE_PATH": "/dep/c", "LIBRARY_PATH": "/usr/lib:/dep/lib", "DEP_ROOT": "/dep"}


def _dep(env: dict[str, str]) -> ResolvedDep:
    return ResolvedDep(name="dep", env_uid="0123456789abcdef", soft="test.dep", version="1.0", tags=("dep",),
                       env=env, full_path="/dep", install_dir=None, package=None)


def test_one_path_variable_rule_for_install_and_run():
    dep = _dep(DEP_ENV)
    by_install = dependency_environment([dep], BASE)  # what a package's hook and pip run with
    by_run = assemble_env(BASE, [dep.env], {}, {}, {})  # what `ckx run` gives the program
    assert by_install == by_run
    assert by_run["PATH"] == os.pathsep.join(["/dep/bin", "/usr/bin", "/bin"])
    assert by_run["CPLUS_INCLUDE_PATH"] == os.pathsep.join(["/dep/include", "/usr/include/c++"])
    assert by_run["C_INCLUDE_PATH"] == "/dep/c"
    assert by_run["LIBRARY_PATH"] == os.pathsep.join(["/usr/lib", "/dep/lib"])
    assert by_run["KEEP"] == "k" and by_run["DEP_ROOT"] == "/dep"


def test_the_path_variables_include_the_compiler_search_paths():
    assert {"PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "CPLUS_INCLUDE_PATH", "C_INCLUDE_PATH", "LIBRARY_PATH"} <= PATH_VARIABLES


def test_a_self_reference_alone_leaves_a_path_variable_as_it_was_and_env_sh_drops_it():
    env = {"PATH": "/usr/bin"}
    apply_layer(env, {"PATH": "$PATH"})
    assert env == {"PATH": "/usr/bin"}
    script = render_env_script({"uid": "u", "soft": "s", "env": {"PATH": "/x/bin:$PATH", "LD_LIBRARY_PATH": "$LD_LIBRARY_PATH"}})
    assert 'export PATH=/x/bin"${PATH:+:${PATH}}"' in script
    assert "/x/bin:$PATH" not in script and "LD_LIBRARY_PATH" not in script


def test_one_boolean_convention_for_records_and_runs():
    assert [env_text(True), env_text(False), env_text(None), env_text(3)] == ["1", "0", None, "3"]
    assert merge_env({"GONE": "x"}, [{"ON": True, "OFF": False, "GONE": None}]) == {"ON": "1", "OFF": "0"}
    assert assemble_env({}, [], {"ON": True, "OFF": False}, {}, {}) == {"ON": "1", "OFF": "0"}


def test_placeholders_are_strict_and_escapes_stay_literal():
    assert render("{a}/{{b}}/$HOME", {"a": "x"}, where="w") == ("x/{b}/$HOME", True)
    assert render("$$V={env:V}", {}, where="w", env={"V": "1"}) == ("$V=1", True)
    assert render("--x=$UNSET", {}, where="w", env={}) == ("--x=", False)
    for text, env in (("{b}", None), ("{env:V}", None), ("{Upper}", {}), ("{a:V}", {})):
        with pytest.raises(MetaError, match=r"^w: unknown placeholder"):
            render(text, {"a": "x"}, where="w", env=env)


# -- the unknown placeholder, through a real installation and a real program -------------------------
def _write(root: Path, kind: str, alias: str, meta: dict) -> Path:
    entry = root / kind / alias
    entry.mkdir(parents=True)
    (entry / "meta.json").write_text(json.dumps({"alias": alias, "uid": secrets.token_hex(8), "schema_version": 1,
                                                 **meta}, indent=1))
    return entry / "meta.json"


def test_unknown_placeholder_is_refused_in_a_package_env_and_in_a_program_argv(ctx, tmp_path):
    root = tmp_path / "repo"
    add_repo(ctx, {"entry": "placeholders", "path": str(root)})
    package_meta = _write(root, "packages", "typo-pkg", {
        "tags": ["typo-pkg"], "source": {"kind": "hook"}, "env": {"TYPO_ROOT": "{instal_dir}/lib"}})
    (package_meta.parent / "install.py").write_text("def install(*, install_dir):\n    return None\n")
    program_meta = _write(root, "programs", "typo-prog", {
        "tags": ["typo-prog"], "run_cmds": {"go": {"argv": ["{pyhton}", "-c", "pass"]}}})
    ctx.index.refresh(["package", "program"], force=True)

    with pytest.raises(MetaError) as package_error:
        install(ctx, alias="typo-pkg")
    message = str(package_error.value)
    assert str(package_meta) in message and "env.TYPO_ROOT" in message and "{instal_dir}" in message
    assert "{install_dir}" in message  # the names it knows
    assert not any(p.name.startswith("typo-pkg") for p in ctx.home.tools.iterdir())  # nothing half-installed

    program = load_program(ctx, "typo-prog")
    with pytest.raises(MetaError) as program_error:
        build_command(program, "go", [], {}, run_dir=tmp_path / "run", cache_dir=tmp_path / "cache")
    message = str(program_error.value)
    assert str(program_meta) in message and "{pyhton}" in message and "{python}" in message

