"""Env records: recording and dedupe, env.sh, queries by tags and versions, show/rm/virtual env."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from basesite import add_demo_soft, install_in_base_user_site

from ckx.api import access
from ckx.software.envs import (
    delete_env,
    find_envs,
    load_env,
    merge_env,
    record_env,
    record_env_ex,
    render_env_script,
)
from ckx.software.versions import VersionRange, compare_versions, version_split, version_tags
from ckx.core.errors import MetaError, NotFound, UsageError
from ckx.software.platform import platform_tags


def _record(ctx, version="1.2.3", full_path="/opt/thing", soft="lib.thing", tags="lib,thing", **kwargs):
    return record_env(ctx, soft=soft, version=version, full_path=full_path, env=kwargs.pop("env", {"THING": "1"}),
                      tags=tags, env_prefix=kwargs.pop("env_prefix", "CK_ENV_THING"), **kwargs)


# -- versions ----------------------------------------------------------------------------------
@pytest.mark.parametrize("version, split, tags", [
    ("3.11.7", [3, 11, 7], ["v3", "v3.11", "v3.11.7"]),
    ("2.13.0+cpu", [2, 13, 0], ["v2", "v2.13", "v2.13.0", "v2.13.0+cpu"]),
    ("2012", [2012], ["v2012"]),
    ("5.0.0.93", [5, 0, 0, 93], ["v5", "v5.0", "v5.0.0", "v5.0.0.93"]),
    (None, [], []),
])
def test_version_split_and_tags(version, split, tags):
    assert version_split(version) == split
    assert version_tags(version) == tags


def test_compare_versions_uses_pep440_and_falls_back_to_numbers():
    assert compare_versions("1.10", "1.9") == 1
    assert compare_versions("2.13.0+cpu", "2.13.0") == 1
    assert compare_versions("1.0rc1", "1.0") == -1
    assert compare_versions("r12-x", "r12-x") == 0
    assert compare_versions("2012-b", "2011-a") == 1  # not PEP 440: numeric parts


def test_version_range_from_ck_lists_strings_and_specifiers():
    ck = VersionRange.from_spec({"version_from": [2, 2, 0], "version_to": [2, 2, 99]})
    assert ck.contains("2.2.5") and not ck.contains("2.3.0") and not ck.contains("2.1.9")
    assert not ck.contains(None)
    text = VersionRange.from_spec({"version_from": "1.24"})
    assert text.contains("2.4.6") and not text.contains("1.23.5")
    spec = VersionRange.from_spec({"version": ">=1.24,<3"})
    assert spec.contains("2.4.6") and not spec.contains("3.0")
    operator_from = VersionRange.from_spec({"version_from": ">=2"})
    assert operator_from.contains("2.0") and not operator_from.contains("1.9")
    exact = VersionRange.from_spec({"version": "1.5"})
    assert exact.contains("1.5") and not exact.contains("1.5.1")
    assert VersionRange.from_spec({"version_from": "3", "version_to": "2"}).is_empty()
    assert VersionRange.from_spec({}).contains(None)


def test_version_range_rejects_a_bad_specifier():
    with pytest.raises(UsageError, match="invalid version specifier"):
        VersionRange.from_spec({"version": ">=1..2"})


# -- recording ---------------------------------------------------------------------------------
def test_record_env_writes_meta_tags_and_env_sh(ctx):
    record = _record(ctx, env={"THING": "a b 'c' $HOME", "PYTHONPATH": "/opt/site"}, extra_tags="extra1",
                     deps={"python": "0123456789abcdef"}, name="The thing")
    meta = json.loads((record.path / "meta.json").read_text())
    assert meta["uid"] == record.uid and meta["schema_version"] == 1
    assert meta["soft"] == "lib.thing" and meta["version"] == "1.2.3" and meta["version_split"] == [1, 2, 3]
    assert meta["full_path"] == "/opt/thing" and meta["env_prefix"] == "CK_ENV_THING"
    assert meta["deps"] == {"python": "0123456789abcdef"} and meta["name"] == "The thing"
    assert meta["env"]["CK_ENV_THING_SET"] == "1"
    for tag in ["lib", "thing", "extra1", "v1", "v1.2", "v1.2.3", *platform_tags()]:
        assert tag in record.tags
    assert "host-os-linux-64" in record.tags and "64bits" in record.tags
    assert record.path.parent == ctx.home.local_repo / "envs"
    script = (record.path / "env.sh").read_text()
    assert 'if [ "${CK_ENV_THING_SET:-}" != "1" ]; then' in script
    assert "export THING='a b '\"'\"'c'\"'\"' $HOME'" in script
    assert "export CK_ENV_THING_SET=1" in script


def test_env_sh_sources_in_sh_with_quoting_guard_and_path_prepending(ctx, tmp_path):
    record = _record(ctx, env={"THING": "a b 'c' $HOME", "PYTHONPATH": "/opt/site"})
    script = record.path / "env.sh"
    out = subprocess.run(
        ["/bin/sh", "-c", f'. "{script}"; . "{script}"; printf "%s|%s|%s" "$THING" "$PYTHONPATH" "$CK_ENV_THING_SET"'],
        capture_output=True, text=True, check=True, timeout=30,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": "/already", "HOME": "/home/x"},
    ).stdout
    assert out == "a b 'c' $HOME|/opt/site:/already|1"


def test_env_sh_without_prefix_has_no_guard():
    text = render_env_script({"uid": "u", "soft": "s", "env": {"A": "1"}, "env_prefix": None})
    assert "if [" not in text and "export A=1" in text


def test_same_soft_path_and_version_give_the_same_env(ctx):
    first, new1 = record_env_ex(ctx, soft="lib.thing", version="1.2.3", full_path="/opt/thing", env={"A": "1"},
                                tags="lib,thing", extra_tags=["kept"])
    second, new2 = record_env_ex(ctx, soft="lib.thing", version="1.2.3", full_path="/opt/thing", env={"A": "2"},
                                 tags="lib,thing")
    assert new1 and not new2
    assert first.uid == second.uid
    assert second.env["A"] == "2"
    assert "kept" in second.tags  # tags others added survive a second detection
    assert second.meta["created"] == first.meta["created"]
    assert len(find_envs(ctx, tags="thing")) == 1
    other = _record(ctx, version="1.3.0")
    assert other.uid != first.uid
    assert [r.version for r in find_envs(ctx, tags="thing")] == ["1.3.0", "1.2.3"]


def _module_env(ctx, python, python_uid):
    return record_env_ex(ctx, soft="lib.python.thing", version="2.0", full_path="/site/thing", env={"A": "1"},
                         tags="lib,python-package,thing", deps={"python": python_uid}, detected_by="module",
                         extra_meta={"python": python, "python_module": "thing"})


def test_a_module_found_through_two_interpreters_is_two_envs(ctx):
    through_venv, new1 = _module_env(ctx, "/venvs/v/bin/python", "aaaaaaaaaaaaaaaa")
    through_system, new2 = _module_env(ctx, "/usr/bin/python3", "bbbbbbbbbbbbbbbb")
    assert new1 and new2 and through_venv.uid != through_system.uid
    ctx.index.refresh(["env"], force=True)
    venv_record = load_env(ctx, through_venv.uid)  # its link did not flip to the system python
    assert venv_record.deps == {"python": "aaaaaaaaaaaaaaaa"} and venv_record.meta["python"] == "/venvs/v/bin/python"
    assert load_env(ctx, through_system.uid).deps == {"python": "bbbbbbbbbbbbbbbb"}
    again, new3 = _module_env(ctx, "/venvs/v/bin/../bin/python", "aaaaaaaaaaaaaaaa")  # the same interpreter
    assert not new3 and again.uid == through_venv.uid
    assert len(find_envs(ctx, tags="thing")) == 2


def test_a_module_record_without_an_interpreter_path_is_told_apart_by_its_python_dep(ctx):
    def record(python_uid):
        return record_env_ex(ctx, soft="lib.python.thing", version="2.0", full_path="/site/thing", env={},
                             tags="thing", deps={"python": python_uid}, detected_by="module")
    first, _ = record("aaaaaaaaaaaaaaaa")
    same, new = record("aaaaaaaaaaaaaaaa")
    assert same.uid == first.uid and not new
    other, new = record("bbbbbbbbbbbbbbbb")
    assert other.uid != first.uid and new


def test_a_package_seen_through_a_system_site_packages_venv_and_its_base_python_is_two_envs(ctx, tmp_path,
                                                                                          monkeypatch):
    from ckx.software.resolve import detect_soft

    base = install_in_base_user_site(tmp_path, monkeypatch)
    ctx.registry  # creates the local repo
    add_demo_soft(ctx.home.local_repo)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=120, capture_output=True)
    through_venv = detect_soft(ctx, "lib.python.ckxdemo", python=str(venv / "bin" / "python"))[0]
    through_base = detect_soft(ctx, "lib.python.ckxdemo", python=str(base.python))[0]
    assert through_venv.full_path == through_base.full_path == str(base.package)  # the same files...
    assert through_venv.uid != through_base.uid  # ...seen through two interpreters: two envs
    ctx.index.refresh(["env"], force=True)
    venv_python = load_env(ctx, load_env(ctx, through_venv.uid).deps["python"])
    assert Path(venv_python.full_path).parent == venv / "bin"
    base_python = load_env(ctx, load_env(ctx, through_base.uid).deps["python"])
    assert base_python.uid != venv_python.uid and Path(base_python.full_path).parent != venv / "bin"
    assert detect_soft(ctx, "lib.python.ckxdemo", python=str(venv / "bin" / "python"))[0].uid == through_venv.uid


def test_install_dir_identifies_an_env_without_full_path(ctx, tmp_path):
    a = record_env(ctx, soft=None, version="1", full_path=None, install_dir=str(tmp_path), env={}, tags="pkg",
                   package="p")
    b = record_env(ctx, soft=None, version="1", full_path=None, install_dir=str(tmp_path), env={}, tags="pkg",
                   package="p")
    assert a.uid == b.uid and a.soft is None and a.package == "p"


def test_bad_variable_name_and_prefix_are_meta_errors(ctx):
    with pytest.raises(MetaError, match="invalid environment variable name 'BAD-NAME'"):
        _record(ctx, env={"BAD-NAME": "1"})
    with pytest.raises(MetaError, match="invalid env_prefix"):
        _record(ctx, env_prefix="1BAD")


def test_find_envs_by_tags_exclusions_and_versions(ctx):
    _record(ctx, version="1.0", tags="lib,thing,cpu")
    _record(ctx, version="2.0", tags="lib,thing,gpu", full_path="/opt/thing2")
    _record(ctx, version="1.5", soft="other", tags="lib,other", full_path="/opt/other")
    assert [r.version for r in find_envs(ctx, tags="lib,thing")] == ["2.0", "1.0"]
    assert [r.version for r in find_envs(ctx, tags="thing,-gpu")] == ["1.0"]
    assert [r.version for r in find_envs(ctx, tags="lib", version_from=[1, 2])] == ["2.0", "1.5"]
    assert [r.version for r in find_envs(ctx, tags="lib", version_to="1.5")] == ["1.5", "1.0"]
    assert [r.version for r in find_envs(ctx, tags="lib", version=">=1.2,<2")] == ["1.5"]
    assert [r.soft for r in find_envs(ctx, tags="lib", soft="other")] == ["other"]
    assert [r.version for r in find_envs(ctx, tags="v2")] == ["2.0"]
    assert find_envs(ctx, tags="nothing-has-this") == []


def test_load_and_delete_env(ctx):
    record = _record(ctx)
    assert load_env(ctx, record.uid).full_path == "/opt/thing"
    delete_env(ctx, record.uid)
    assert not record.path.exists()
    with pytest.raises(NotFound, match=record.uid):
        load_env(ctx, record.uid)
    with pytest.raises(NotFound):
        delete_env(ctx, record.uid)


def test_merge_env_prepends_search_paths_and_replaces_the_rest():
    merged = merge_env({"PYTHONPATH": "/b:/c", "A": "old"}, [{"PYTHONPATH": "/a:/c", "A": "new"}, {"B": "1"}])
    assert merged == {"PYTHONPATH": "/a:/c:/b", "A": "new", "B": "1"}
    assert merge_env({}, [{"PATH": "/x"}]) == {"PATH": "/x"}


def test_is_present_notices_a_vanished_path(ctx, tmp_path):
    target = tmp_path / "thing"
    target.mkdir()
    record = _record(ctx, full_path=str(target))
    assert record.is_present()
    target.rmdir()
    assert not load_env(ctx, record.uid).is_present()


# -- show env ----------------------------------------------------------------------------------
def test_show_env_table_and_json(cli, cli_json, ctx, tmp_path):
    existing = tmp_path / "thing"
    existing.mkdir()
    a = _record(ctx, version="1.0", full_path=str(existing))
    b = _record(ctx, version="2.0", soft="other", tags="lib,other", full_path="/nonexistent/other")
    proc = cli("show", "env")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["uid", "soft", "version", "tags", "path"]
    row_a = next(line for line in lines if a.uid in line)
    assert "lib.thing" in row_a and "1.0" in row_a and "lib,thing" in row_a and str(existing) in row_a
    assert "host-os" not in row_a  # automatic tags are left out of the table
    row_b = next(line for line in lines if b.uid in line)
    assert "(missing)" in row_b
    code, data = cli_json("show", "env", "--tags=other")
    assert code == 0 and [e["uid"] for e in data["envs"]] == [b.uid]
    proc = cli("show", "env", "--tags=nothing-has-this")
    assert proc.returncode == 0 and "no envs recorded" in proc.stdout


def test_show_env_with_an_env_cid_shows_only_that_env(cli_json, ctx):
    a = _record(ctx, version="1.0")
    b = _record(ctx, version="2.0", soft="other", tags="lib,other", full_path="/opt/other")
    for argv in (["show", "env", f"env:{a.uid}"], ["show", f"env:{a.uid}"]):
        code, data = cli_json(*argv)
        assert code == 0, data
        assert [e["uid"] for e in data["envs"]] == [a.uid], argv
    code, data = cli_json("show", "env", f"env:{a.uid}", f"env:{b.uid}")
    assert code == 0 and sorted(e["uid"] for e in data["envs"]) == sorted([a.uid, b.uid])
    code, data = cli_json("show", "env", "env:0123456789abcdef")
    assert code == 3


def test_rm_env_with_an_env_cid_after_the_module(cli, ctx):
    a = _record(ctx, version="1.0")
    b = _record(ctx, version="2.0", soft="other", tags="lib,other", full_path="/opt/other")
    proc = cli("rm", "env", f"env:{a.uid}", "--force")
    assert proc.returncode == 0, proc.stderr
    assert not a.path.exists() and b.path.is_dir()


# -- rm env ------------------------------------------------------------------------------------
def test_rm_env_without_force_refuses_without_prompting(cli, ctx):
    record = _record(ctx)
    proc = cli("rm", f"env:{record.uid}")
    assert proc.returncode == 2
    assert "--force" in proc.stderr
    assert record.path.is_dir()


def test_rm_env_with_force_by_uid_and_by_tags(cli, ctx):
    a = _record(ctx, version="1.0")
    b = _record(ctx, version="2.0")
    c = _record(ctx, soft="other", tags="lib,other", full_path="/opt/other")
    proc = cli("rm", f"env:{a.uid}", "--force")
    assert proc.returncode == 0, proc.stderr
    assert f"removed env {a.uid}" in proc.stdout and not a.path.exists()
    proc = cli("rm", "env", "--tags=thing", "--force")
    assert proc.returncode == 0 and not b.path.exists() and c.path.exists()
    assert cli("rm", "env", "--tags=thing", "--force").returncode == 3
    assert cli("rm", "env:0000000000000000", "--force").returncode == 3
    assert cli("rm", "env", "--force").returncode == 2


def test_rm_env_all_deletes_install_dirs_only_inside_tools(ctx, tmp_path):
    inside = ctx.home.tools / "pkg-1"
    inside.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    a = record_env(ctx, soft="s", version="1", full_path=None, install_dir=inside, env={}, tags="t", package="p")
    b = record_env(ctx, soft="s", version="2", full_path=None, install_dir=outside, env={}, tags="t", package="p")
    result = access({"action": "rm", "module": "env", "tags": "t", "force": True, "all": True}, context=ctx)
    assert result["return"] == 0, result
    assert not inside.exists() and outside.is_dir()
    assert any("kept" in w for w in ctx.reporter.warnings)
    assert not a.path.exists() and not b.path.exists()


# -- virtual env -------------------------------------------------------------------------------
def test_virtual_env_runs_a_command_seeing_the_vars(cli, ctx, tmp_path):
    _record(ctx, env={"THING_VALUE": "hello world", "PYTHONPATH": str(tmp_path)})
    code = "import os, sys; print(os.environ['THING_VALUE'], os.environ['CK_ENV_THING_SET'], sys.path[1])"
    proc = cli("virtual", "env", "--tags=thing", "--", sys.executable, "-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"hello world 1 {tmp_path}")


def test_virtual_env_shell_cmd_and_cmd(cli, ctx):
    record = _record(ctx, env={"THING_VALUE": "v1"})
    proc = cli("virtual", f"env:{record.uid}", "--shell_cmd=echo \"[$THING_VALUE]\" && echo second")
    assert proc.returncode == 0, proc.stderr
    assert "[v1]\nsecond" in proc.stdout
    # --cmd is split with shlex and run without a shell: the $ stays literal
    proc = cli("virtual", "env", "--tags=thing", "--cmd=echo '$THING_VALUE' plain")
    assert proc.returncode == 0 and "$THING_VALUE plain" in proc.stdout


def test_virtual_env_unhappy_paths(cli, ctx):
    _record(ctx)
    proc = cli("virtual", "env", "--tags=thing", "--shell_cmd=exit 7")
    assert proc.returncode == 6 and "status 7" in proc.stderr
    proc = cli("virtual", "env", "--tags=thing")  # no command, no terminal
    assert proc.returncode == 2 and "--shell_cmd" in proc.stderr
    assert cli("virtual", "env", "--tags=nothing-has-this", "--shell_cmd=true").returncode == 3
    assert cli("virtual", "env", "--shell_cmd=true").returncode == 2
    proc = cli("virtual", "env", "--tags=thing", "--", "/nonexistent/command")
    assert proc.returncode == 3 and "command not found" in proc.stderr


def test_virtual_env_with_several_matches_picks_the_newest_and_says_so(ctx):
    _record(ctx, version="1.0")
    newest = _record(ctx, version="2.0", full_path="/opt/thing2")
    result = access({"action": "virtual", "module": "env", "tags": "thing",
                     "rest": [sys.executable, "-c", "pass"]}, context=ctx)
    assert result["return"] == 0 and result["envs"] == [newest.uid]
    assert any("2 envs match" in m for m in ctx.reporter.messages)


def test_virtual_env_tag_groups(ctx):
    a = _record(ctx, env={"A": "1"})
    b = _record(ctx, soft="other", tags="lib,other", full_path="/opt/other", env={"B": "2"}, env_prefix="CK_ENV_OTHER")
    code = "import os; assert os.environ['A'] == '1' and os.environ['B'] == '2'"
    result = access({"action": "virtual", "module": "env", "tag_groups": "thing other",
                     "rest": [sys.executable, "-c", code]}, context=ctx)
    assert result["return"] == 0, result
    assert result["envs"] == [a.uid, b.uid]


def test_env_record_path_is_under_the_local_repo_not_the_checkout(ctx):
    record = _record(ctx)
    root = Path(__file__).resolve().parent.parent
    assert root not in record.path.parents


def test_ck_format_env_entries_are_not_env_records(ctx, ck_repo_factory):
    root = ck_repo_factory("ckenvs", {"env": [(None, "4a1b2c3d4e5f6071", {
        "tags": ["lib", "thing"], "soft_uoa": "lib.thing", "env": {"CK_ENV_X": "/somewhere/else"}})]})
    assert access({"action": "add", "module": "repo", "entry": "ckenvs", "path": str(root)}, context=ctx)["return"] == 0
    ctx.forget_registry()
    assert find_envs(ctx, tags="lib,thing") == []
    with pytest.raises(NotFound):
        load_env(ctx, "4a1b2c3d4e5f6071")


def test_virtual_env_on_a_terminal_starts_the_users_shell(ckx_home, tmp_path, monkeypatch):
    from ckx.store.context import Context
    from ckx.core.home import Home

    out = tmp_path / "seen.txt"
    shell = tmp_path / "fake-shell"
    shell.write_text(f'#!/bin/sh\nprintf "%s" "$THING_VALUE" > "{out}"\n')
    shell.chmod(0o755)
    monkeypatch.setenv("SHELL", str(shell))
    ctx = Context(Home(ckx_home), interactive=True)
    try:
        _record(ctx, env={"THING_VALUE": "inside"})
        result = access({"action": "virtual", "module": "env", "tags": "thing"}, context=ctx)
    finally:
        ctx.close()
    assert result["return"] == 0, result
    assert out.read_text() == "inside" and result["argv"] == [str(shell)]
