"""Dependency resolution: recorded envs, then detection, then installation; versions, forcing, cycles."""
from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from ckx.api import access
from ckx.software.envs import find_envs, record_env
from ckx.core.errors import MetaError, ResolutionError, UsageError
from ckx.software.resolve import dep_order, install, matching_packages, resolve_deps


def _env(ctx, version, *, tags="lib,thing", full_path=None, soft="lib.thing", env=None, **kwargs):
    return record_env(ctx, soft=soft, version=version, full_path=full_path or f"/opt/{soft}-{version}",
                      env=env or {"THING_VERSION": version}, tags=tags, **kwargs)


@pytest.fixture
def present(monkeypatch):
    """Make every recorded full_path count as present (the envs here point at imaginary paths)."""
    from ckx.software import envs

    monkeypatch.setattr(envs.EnvRecord, "is_present", lambda self: True)


@pytest.fixture
def repo(tmp_path, ctx):
    """A temporary native repo 't' registered in the home; returns its root."""
    root = tmp_path / "repo"
    result = access({"action": "add", "module": "repo", "entry": "t", "path": str(root)}, context=ctx)
    assert result["return"] == 0, result
    ctx.forget_registry()
    return root


def add_entry(ctx, root: Path, kind_dir: str, alias: str, meta: dict, files: dict[str, str] | None = None) -> Path:
    entry = root / kind_dir / alias
    entry.mkdir(parents=True)
    full = {"alias": alias, "uid": os.urandom(8).hex(), "schema_version": 1, **meta}
    (entry / "meta.json").write_text(json.dumps(full, indent=1))
    for name, text in (files or {}).items():
        (entry / name).write_text(textwrap.dedent(text))
    ctx.index.refresh(force=True)
    return entry


HOOK = """
    def install(*, install_dir, package_dir, meta, variation, env, python, downloaded, info):
        (install_dir / "thing.txt").write_text("made by the hook")
        return {"HOOKTHING_FILE": "{install_dir}/thing.txt"}
"""


def hook_package(ctx, root, alias, tags, *, version="1.0", deps=None):
    meta = {"tags": tags, "version": version, "source": {"kind": "hook"}, "env_prefix": "CK_ENV_HOOKTHING"}
    if deps:
        meta["deps"] = deps
    return add_entry(ctx, root, "packages", alias, meta, {"install.py": HOOK})


# -- recorded envs -----------------------------------------------------------------------------
def test_existing_env_newest_version_first_and_says_which(ctx, present):
    _env(ctx, "1.0")
    newest = _env(ctx, "2.0")
    [dep] = resolve_deps(ctx, {"thing": {"tags": "lib,thing"}})
    assert dep.env_uid == newest.uid and dep.origin == "env" and dep.version == "2.0"
    assert dep.env["THING_VERSION"] == "2.0" and dep.soft == "lib.thing"
    assert dep.to_choice() == {"env_uid": newest.uid, "soft": "lib.thing", "version": "2.0",
                               "tags": list(newest.tags), "package": None}
    assert any("2 envs match" in m and newest.uid in m for m in ctx.reporter.messages)


def test_version_ranges_ck_lists_strings_and_specifiers(ctx, present):
    for version in ("1.2.0", "2.2.5", "3.0.0"):
        _env(ctx, version)

    def pick(**spec):
        return resolve_deps(ctx, {"thing": {"tags": "thing", **spec}}, installed_only=True)[0].version

    assert pick(version_from=[2, 2, 0], version_to=[2, 2, 99]) == "2.2.5"
    assert pick(version_to="2.0") == "1.2.0"
    assert pick(version_from="2") == "3.0.0"
    assert pick(version=">=1,<3") == "2.2.5"
    assert pick(version_from=">=1.5", version_to="<3") == "2.2.5"
    with pytest.raises(ResolutionError, match="version_from 3 is above version_to 2"):
        pick(version_from="3", version_to="2")
    with pytest.raises(ResolutionError) as info:
        pick(version_from="4")
    assert info.value.exit_code == 4
    with pytest.raises(UsageError):
        pick(version="=>1")


def test_forced_env_wins_outright(ctx, present):
    old = _env(ctx, "1.0")
    _env(ctx, "2.0")
    other = _env(ctx, "9.9", tags="lib,other", soft="other")
    [dep] = resolve_deps(ctx, {"thing": {"tags": "thing"}}, forced={"thing": old.uid})
    assert dep.env_uid == old.uid and dep.origin == "forced"
    [dep] = resolve_deps(ctx, {"thing": {"tags": "thing"}}, forced={"thing": other.uid})
    assert dep.env_uid == other.uid
    assert any("lacks tags thing" in w for w in ctx.reporter.warnings)
    with pytest.raises(ResolutionError, match="--deps.thing=0000000000000000"):
        resolve_deps(ctx, {"thing": {"tags": "thing"}}, forced={"thing": "0000000000000000"})


def test_add_tags_narrow_and_names_are_aliases(ctx, present):
    cpu = _env(ctx, "1.0", tags="lib,thing,thing-cpu")
    _env(ctx, "2.0", tags="lib,thing,thing-gpu")
    [dep] = resolve_deps(ctx, {"lib-thing": {"tags": "thing", "names": ["thing"]}}, add_tags={"thing": "thing-cpu"})
    assert dep.env_uid == cpu.uid and dep.name == "lib-thing"
    [dep] = resolve_deps(ctx, {"thing": {"tags": "thing", "no_tags": "thing-gpu"}})
    assert dep.env_uid == cpu.uid
    [dep] = resolve_deps(ctx, {"thing": {"tags": "thing"}}, add_tags={"thing": "-thing-gpu"})
    assert dep.env_uid == cpu.uid


def test_sort_order_skip_if_env_and_enable_if_env(ctx, present):
    a = _env(ctx, "1", tags="alpha", soft="alpha", env={"ALPHA_ROOT": "/a"})
    _env(ctx, "1", tags="beta", soft="beta", env={"BETA_ROOT": "/b"})
    c = _env(ctx, "1", tags="gamma", soft="gamma", env={"GAMMA_ROOT": "/c"})
    deps = {
        "z-first": {"tags": "alpha", "sort": 1},
        "a-skipped": {"tags": "beta", "sort": 5, "skip_if_env": ["ALPHA_ROOT"]},
        "m-enabled": {"tags": "gamma", "sort": 9, "enable_if_env": {"USE_GAMMA": ["yes", "on"]}},
    }
    resolved = resolve_deps(ctx, deps, env={"USE_GAMMA": "on"})
    assert [(d.name, d.env_uid) for d in resolved] == [("z-first", a.uid), ("m-enabled", c.uid)]
    assert [d.name for d in resolve_deps(ctx, deps, env={"USE_GAMMA": "no"})] == ["z-first"]
    assert [d.name for d in resolve_deps(ctx, deps, env={})] == ["z-first"]
    assert [n for n, _ in dep_order({"b": {"tags": "x"}, "a": {"tags": "x"}, "c": {"tags": "x", "sort": -1}})] == \
        ["c", "a", "b"]


def test_offline_tags_replace_tags_when_offline(ctx, present):
    online = _env(ctx, "1", tags="model,big", soft="m-big")
    offline = _env(ctx, "1", tags="model,small", soft="m-small")
    spec = {"model": {"tags": "model,big", "offline_tags": "model,small"}}
    assert resolve_deps(ctx, spec)[0].env_uid == online.uid
    assert resolve_deps(ctx, spec, offline=True)[0].env_uid == offline.uid


def test_malformed_dependencies_are_meta_errors(ctx):
    with pytest.raises(MetaError, match="no 'tags'"):
        resolve_deps(ctx, {"x": {"sort": 1}})
    with pytest.raises(MetaError, match="must be an object"):
        resolve_deps(ctx, {"x": "lib,numpy"})
    with pytest.raises(MetaError, match="'sort'"):
        resolve_deps(ctx, {"x": {"tags": "a", "sort": "first"}})


def test_vanished_env_is_ignored_with_a_warning(ctx, tmp_path):
    kept = tmp_path / "kept"
    kept.mkdir()
    good = _env(ctx, "1.0", full_path=str(kept))
    gone = _env(ctx, "2.0", full_path=str(tmp_path / "gone"))
    [dep] = resolve_deps(ctx, {"thing": {"tags": "thing"}})
    assert dep.env_uid == good.uid
    assert any(gone.uid in w and "gone" in w for w in ctx.reporter.warnings)


def test_nothing_provides_it(ctx, cli):
    with pytest.raises(ResolutionError) as info:
        resolve_deps(ctx, {"ghost": {"tags": "no-such-thing,anywhere"}})
    assert "dependency ghost" in str(info.value) and "no-such-thing,anywhere" in str(info.value)
    assert "ckx install package" in (info.value.hint or "")
    with pytest.raises(ResolutionError, match="no recorded env matches"):
        resolve_deps(ctx, {"ghost": {"tags": "no-such-thing"}}, installed_only=True)


# -- python affinity ---------------------------------------------------------------------------
def test_packages_tied_to_another_interpreter_are_not_used(ctx, present):
    py_a = _env(ctx, "3.11.7", tags="compiler,python", soft="compiler.python", full_path="/py/a/python3")
    py_b = _env(ctx, "3.12.1", tags="compiler,python", soft="compiler.python", full_path="/py/b/python3")
    for_b = _env(ctx, "2.0", tags="lib,python-package,thing", deps={"python": py_b.uid})
    for_a = _env(ctx, "1.0", tags="lib,python-package,thing", deps={"python": py_a.uid})
    deps = {"python": {"tags": "compiler,python", "sort": 0}, "thing": {"tags": "python-package,thing", "sort": 1}}
    resolved = resolve_deps(ctx, deps, forced={"python": py_a.uid})
    assert [d.env_uid for d in resolved] == [py_a.uid, for_a.uid]
    resolved = resolve_deps(ctx, deps, forced={"python": py_b.uid})
    assert [d.env_uid for d in resolved] == [py_b.uid, for_b.uid]


def test_the_running_interpreter_is_preferred(ctx, present):
    newer = _env(ctx, "9.9.9", tags="compiler,python", soft="compiler.python", full_path="/py/newer/python3")
    running = _env(ctx, "3.0.0", tags="compiler,python", soft="compiler.python", full_path=sys.executable,
                   extra_meta={"python_prefix": sys.prefix})
    [dep] = resolve_deps(ctx, {"python": {"tags": "compiler,python"}})
    assert dep.env_uid == running.uid and newer.uid != running.uid


# -- detection ---------------------------------------------------------------------------------
def test_detection_when_no_env_is_recorded(ctx, repo, tmp_path, monkeypatch):
    add_entry(ctx, repo, "soft", "tool.resolvable", {
        "tags": ["tool", "resolvable"], "env_prefix": "CK_ENV_RESOLVABLE",
        "detect": {"kind": "executable", "names": ["resolvable-tool"], "version_regex": r"v(\S+)"},
        "env": {"{prefix}_FILE": "{full_path}"},
    })
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "resolvable-tool"
    exe.write_text("#!/bin/sh\necho v5.1\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    [dep] = resolve_deps(ctx, {"tool": {"tags": "tool,resolvable", "version_from": "5"}})
    assert dep.origin == "detected" and dep.version == "5.1" and dep.full_path == str(exe)
    assert dep.env["CK_ENV_RESOLVABLE_FILE"] == str(exe)
    [again] = resolve_deps(ctx, {"tool": {"tags": "tool,resolvable"}})
    assert again.origin == "env" and again.env_uid == dep.env_uid
    with pytest.raises(ResolutionError):  # detected, but outside the range, and no package to install
        resolve_deps(ctx, {"tool": {"tags": "tool,resolvable", "version_from": "6"}})


def test_python_package_detected_for_the_resolved_interpreter(ctx, tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "onnxruntime").mkdir(parents=True)
    (site / "onnxruntime" / "__init__.py").write_text('__version__ = "7.7.7"\n')
    monkeypatch.setenv("PYTHONPATH", str(site))
    deps = {"python": {"tags": "compiler,python", "sort": 0},
            "onnxruntime": {"tags": "lib,python-package,onnxruntime", "sort": 10}}
    python, ort = resolve_deps(ctx, deps)
    assert python.soft == "compiler.python" and os.path.samefile(python.full_path, sys.executable)
    assert ort.origin == "detected" and ort.version == "7.7.7"
    assert find_envs(ctx, tags="onnxruntime")[0].deps == {"python": python.env_uid}


# -- installation ------------------------------------------------------------------------------
def test_installs_a_hook_package_when_nothing_else_provides_it(ctx, repo):
    hook_package(ctx, repo, "hookthing", ["hookthing", "lib"])
    assert matching_packages(ctx, ["hookthing"]) == ["hookthing"]
    [dep] = resolve_deps(ctx, {"thing": {"tags": "hookthing"}})
    assert dep.origin == "installed" and dep.package == "hookthing" and dep.version == "1.0"
    thing = Path(dep.env["HOOKTHING_FILE"])
    assert thing.read_text() == "made by the hook" and ctx.home.tools in thing.parents
    [again] = resolve_deps(ctx, {"thing": {"tags": "hookthing"}})
    assert again.origin == "env" and again.env_uid == dep.env_uid
    with pytest.raises(ResolutionError, match="installing packages|no recorded env"):
        resolve_deps(ctx, {"thing": {"tags": "hookthing", "version_from": "2"}}, installed_only=True)


def test_installed_version_outside_the_range_is_a_conflict(ctx, repo):
    hook_package(ctx, repo, "hookold", ["hookold"], version="1.0")
    with pytest.raises(ResolutionError) as info:
        resolve_deps(ctx, {"old": {"tags": "hookold", "version_from": [2, 0]}})
    assert "hookold" in str(info.value) and "1.0" in str(info.value)


def test_package_variation_tags_count_for_matching(ctx, repo):
    add_entry(ctx, repo, "packages", "varpkg", {
        "tags": ["varthing"], "source": {"kind": "hook"},
        "variations": {"small": {"tags": ["varthing-small"]}, "big": {"tags": ["varthing-big"]}},
    })
    assert matching_packages(ctx, ["varthing", "varthing-big"]) == ["varpkg"]
    assert matching_packages(ctx, ["varthing", "varthing-huge"]) == []
    assert matching_packages(ctx, ["varthing"], ["varthing"]) == []


def test_dependency_cycle_names_the_entries(ctx, repo):
    hook_package(ctx, repo, "cycle-a", ["cycle-a"], deps={"b": {"tags": "cycle-b"}})
    hook_package(ctx, repo, "cycle-b", ["cycle-b"], deps={"a": {"tags": "cycle-a"}})
    with pytest.raises(ResolutionError) as info:
        resolve_deps(ctx, {"a": {"tags": "cycle-a"}})
    message = str(info.value)
    assert "cycle" in message and "cycle-a" in message and "cycle-b" in message
    assert not list(ctx.home.tools.glob("cycle-*")) if ctx.home.tools.exists() else True
    assert find_envs(ctx, tags="cycle-a") == [] and find_envs(ctx, tags="cycle-b") == []


def test_a_package_whose_tags_come_from_its_base_resolves_and_installs(ctx, repo):
    add_entry(ctx, repo, "packages", "hookbase", {
        "tags": ["hookbase"], "version": "1.0", "source": {"kind": "hook"}, "env_prefix": "CK_ENV_HOOKTHING",
        "variations": {"made": {"tags": ["basemade"]}}}, {"install.py": HOOK})
    add_entry(ctx, repo, "packages", "hookchild", {"base": "hookbase", "tags": ["hookchild"]}, {"install.py": HOOK})
    # The tag basemade is only in the base entry's variation: the resolver and the installer both see it.
    assert matching_packages(ctx, ["hookchild", "basemade"]) == ["hookchild"]
    [dep] = resolve_deps(ctx, {"thing": {"tags": "hookchild,basemade"}})
    assert dep.origin == "installed" and dep.package == "hookchild" and "basemade" in dep.tags
    again = install(ctx, tags="hookchild,basemade")
    assert again.status == "already-installed" and again.env.uid == dep.env_uid
