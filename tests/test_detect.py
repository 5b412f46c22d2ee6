"""Detection: fake executables on a temporary PATH, fake Python packages on PYTHONPATH, marker files, hooks."""
from __future__ import annotations

import json
import os
import platform
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from ckx.api import access
from ckx.software.resolve import detect, detect_soft
from ckx.software.softs import find_softs, load_hooks
from ckx.software.envs import find_envs
from ckx.core.errors import MetaError, NotFound, UsageError


def write_soft(repo: Path, alias: str, meta: dict, customize: str | None = None) -> Path:
    entry = repo / "soft" / alias
    entry.mkdir(parents=True, exist_ok=True)
    full = {"alias": alias, "uid": os.urandom(8).hex(), "schema_version": 1, "tags": [], **meta}
    (entry / "meta.json").write_text(json.dumps(full, indent=1))
    if customize is not None:
        (entry / "customize.py").write_text(textwrap.dedent(customize))
    return entry


@pytest.fixture
def soft_repo(tmp_path, ctx):
    """A temporary native repo registered as 't'; returns a function that adds a soft entry to it."""
    root = tmp_path / "softs"
    result = access({"action": "add", "module": "repo", "entry": "t", "path": str(root)}, context=ctx)
    assert result["return"] == 0, result
    ctx.forget_registry()

    def add(alias: str, meta: dict, customize: str | None = None) -> Path:
        path = write_soft(root, alias, meta, customize)
        ctx.index.refresh(["soft"], force=True)
        return path

    return add


def fake_executable(directory: Path, name: str, output: str, *, code: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\necho '{output}'\nexit {code}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


EXE_SOFT = {
    "name": "Fake compiler", "tags": ["compiler", "fakecc"], "env_prefix": "CK_ENV_FAKECC",
    "detect": {"kind": "executable", "names": ["fakecc"], "version_args": ["--version"],
               "version_regex": r"fakecc version (\S+)"},
    "env": {"{prefix}_FILE": "{full_path}", "{prefix}_BIN": "{dir}", "FAKECC_MAJOR": "{version_major}"},
}


# -- executables -------------------------------------------------------------------------------
def test_executable_on_path_gets_version_tags_env_and_env_sh(ctx, soft_repo, tmp_path, monkeypatch):
    soft_repo("compiler.fakecc", EXE_SOFT)
    exe = fake_executable(tmp_path / "bin", "fakecc", "fakecc version 4.2.1 (build 7)")
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    report = detect(ctx, "compiler.fakecc")
    assert report.subprocesses == 1
    [record] = report.envs
    assert record.version == "4.2.1" and record.full_path == str(exe)
    assert {"compiler", "fakecc", "v4", "v4.2", "v4.2.1", "host-os-linux-64", "target-os-linux-64",
            "64bits"} <= set(record.tags)
    assert record.env == {"CK_ENV_FAKECC_FILE": str(exe), "CK_ENV_FAKECC_BIN": str(exe.parent),
                          "FAKECC_MAJOR": "4", "CK_ENV_FAKECC_SET": "1"}
    assert record.meta["detected_by"] == "executable" and record.meta["name"] == "Fake compiler"
    script = (record.path / "env.sh").read_text()
    assert f"export CK_ENV_FAKECC_FILE={exe}" in script and "CK_ENV_FAKECC_SET" in script


def test_detecting_twice_gives_one_env(ctx, soft_repo, tmp_path, monkeypatch):
    soft_repo("compiler.fakecc", EXE_SOFT)
    exe = fake_executable(tmp_path / "bin", "fakecc", "fakecc version 1.0")
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    first = detect(ctx, "compiler.fakecc")
    second = detect(ctx, "compiler.fakecc")
    assert first.new == [True] and second.new == [False]
    assert first.envs[0].uid == second.envs[0].uid
    assert len(find_envs(ctx, tags="fakecc")) == 1


def test_explicit_full_path_force_version_and_extra_tags(ctx, soft_repo, tmp_path):
    soft_repo("compiler.fakecc", EXE_SOFT)
    exe = fake_executable(tmp_path / "elsewhere", "fakecc", "fakecc version 9.9")
    [record] = detect_soft(ctx, "compiler.fakecc", full_path=str(exe), force_version="10.1",
                           extra_tags="mine,special")
    assert record.version == "10.1" and "v10.1" in record.tags
    assert {"mine", "special"} <= set(record.tags)
    assert record.full_path == str(exe)


def test_no_version_in_output_is_a_warning_and_not_found(ctx, soft_repo, tmp_path, monkeypatch):
    soft_repo("compiler.fakecc", EXE_SOFT)
    exe = fake_executable(tmp_path / "bin", "fakecc", "something else entirely")
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(NotFound, match="nothing found"):
        detect(ctx, "compiler.fakecc")
    assert any("compiler.fakecc" in w and "no version" in w for w in ctx.reporter.warnings)


def test_executable_not_on_path(ctx, soft_repo, tmp_path, monkeypatch):
    soft_repo("compiler.fakecc", EXE_SOFT)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(NotFound) as info:
        detect(ctx, "compiler.fakecc")
    assert "--full_path" in (info.value.hint or "")


# -- customize.py ------------------------------------------------------------------------------
def test_unknown_public_function_in_customize_is_an_error_naming_the_file(ctx, soft_repo, tmp_path):
    entry = soft_repo("compiler.fakecc", EXE_SOFT, customize="""
        def detect_version(*, full_path):
            return "1"

        def setup(i):
            return {}
    """)
    exe = fake_executable(tmp_path / "bin", "fakecc", "fakecc version 1.0")
    with pytest.raises(MetaError) as info:
        detect(ctx, "compiler.fakecc", full_path=str(exe))
    assert str(entry / "customize.py") in str(info.value) and "'setup'" in str(info.value)


def test_positional_or_unknown_hook_parameters_are_errors(tmp_path):
    positional = tmp_path / "a" / "customize.py"
    positional.parent.mkdir()
    positional.write_text("def setup_env(full_path):\n    return {}\n")
    with pytest.raises(MetaError, match="keyword-only"):
        load_hooks(positional)
    unknown = tmp_path / "b" / "customize.py"
    unknown.parent.mkdir()
    unknown.write_text("def setup_env(*, bogus):\n    return {}\n")
    with pytest.raises(MetaError, match="'bogus'"):
        load_hooks(unknown)
    broken = tmp_path / "c" / "customize.py"
    broken.parent.mkdir()
    broken.write_text("def setup_env(*, env:\n")
    with pytest.raises(MetaError, match=str(broken)):
        load_hooks(broken)
    private = tmp_path / "d" / "customize.py"
    private.parent.mkdir()
    private.write_text("import os\nfrom os.path import join\n\ndef _helper():\n    pass\n\n"
                       "def extra_tags(*, version, **rest):\n    return ['x']\n")
    assert set(load_hooks(private)) == {"extra_tags"}


def test_hook_that_raises_is_a_warning_naming_entry_and_candidate_and_detection_goes_on(
        ctx, soft_repo, tmp_path, monkeypatch):
    soft_repo("compiler.fakecc", {**EXE_SOFT, "detect": {**EXE_SOFT["detect"], "all_on_path": True}}, customize="""
        def setup_env(*, full_path, version):
            if "bad" in str(full_path):
                raise RuntimeError("cannot handle this one")
            return {"FAKECC_HOOKED": version}
    """)
    bad = fake_executable(tmp_path / "bad", "fakecc", "fakecc version 1.0")
    good = fake_executable(tmp_path / "good", "fakecc", "fakecc version 2.0")
    monkeypatch.setenv("PATH", os.pathsep.join([str(bad.parent), str(good.parent), os.environ["PATH"]]))
    [record] = detect_soft(ctx, "compiler.fakecc")
    assert record.full_path == str(good) and record.env["FAKECC_HOOKED"] == "2.0"
    [warning] = [w for w in ctx.reporter.warnings if "cannot handle" in w]
    assert "compiler.fakecc" in warning and str(bad) in warning and "setup_env" in warning


def test_detect_version_and_extra_tags_hooks(ctx, soft_repo, tmp_path):
    soft_repo("compiler.fakecc", EXE_SOFT, customize="""
        def detect_version(*, full_path, run):
            return run([str(full_path)]).split()[-1].strip("v")

        def extra_tags(*, version):
            return ["fakecc-major-" + version.split(".")[0]]
    """)
    exe = fake_executable(tmp_path / "bin", "fakecc", "release v3.4")
    [record] = detect_soft(ctx, "compiler.fakecc", full_path=str(exe))
    assert record.version == "3.4" and "fakecc-major-3" in record.tags


def test_hook_returning_the_wrong_type_is_a_warning(ctx, soft_repo, tmp_path):
    soft_repo("compiler.fakecc", EXE_SOFT, customize="""
        def setup_env(*, env):
            return "not a dict"
    """)
    exe = fake_executable(tmp_path / "bin", "fakecc", "fakecc version 1.0")
    with pytest.raises(NotFound):
        detect_soft(ctx, "compiler.fakecc", full_path=str(exe))
    assert any("setup_env() returned str" in w for w in ctx.reporter.warnings)


# -- Python packages ---------------------------------------------------------------------------
def fake_package(site: Path, module: str, *, init_version: str | None = None, dist: str | None = None,
                 dist_version: str | None = None) -> Path:
    package = site / module
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(
        f'"""A fake package."""\n__version__ = "{init_version}"\n' if init_version else '"""No version."""\n')
    if dist:
        info = site / f"{dist.replace('-', '_')}-{dist_version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {dist_version}\n\nBody\n")
    return package


MODULE_SOFT = {
    "name": "Fake package", "tags": ["lib", "python-package", "fakepkg"], "env_prefix": "CK_ENV_PYTHON_PACKAGE_FAKEPKG",
    "detect": {"kind": "module", "module": "fakepkg", "distributions": ["fakepkg", "fakepkg-gpu"],
               "distribution_tags": {"fakepkg": ["fakepkg-cpu"], "fakepkg-gpu": ["fakepkg-gpu"]}},
    "env": {"{prefix}_LIB": "{site_dir}"},
}


def test_python_module_version_from_dist_info_with_distribution_tags(ctx, soft_repo, tmp_path, monkeypatch):
    soft_repo("lib.python.fakepkg", MODULE_SOFT)
    site = tmp_path / "site"
    package = fake_package(site, "fakepkg", init_version="0.4.2", dist="fakepkg", dist_version="0.5.0")
    monkeypatch.setenv("PYTHONPATH", str(site))
    report = detect(ctx, tags="lib,python-package,fakepkg")
    [record] = report.envs
    assert record.soft == "lib.python.fakepkg" and record.version == "0.5.0"
    assert record.full_path == str(package)
    assert {"fakepkg-cpu", "v0.5.0"} <= set(record.tags) and "fakepkg-gpu" not in record.tags
    # the site dir came from PYTHONPATH, so the env carries it
    assert record.env["PYTHONPATH"] == str(site) and record.env["CK_ENV_PYTHON_PACKAGE_FAKEPKG_LIB"] == str(site)
    python = find_envs(ctx, tags="compiler,python")
    assert len(python) == 1 and record.deps == {"python": python[0].uid}
    assert record.meta["python_distribution"] == "fakepkg"
    # the running interpreter describes itself in process: no subprocess at all
    assert report.subprocesses == 0


def test_python_module_version_from_init_without_dist_info(ctx, soft_repo, tmp_path, monkeypatch):
    soft_repo("lib.python.fakepkg", MODULE_SOFT)
    site = tmp_path / "site"
    fake_package(site, "fakepkg", init_version="0.4.2")
    monkeypatch.setenv("PYTHONPATH", str(site))
    [record] = detect_soft(ctx, "lib.python.fakepkg")
    assert record.version == "0.4.2" and "fakepkg-cpu" not in record.tags


def test_python_extension_module_and_asking_for_a_tag_it_lacks(ctx, soft_repo, tmp_path, monkeypatch):
    soft_repo("lib.python.fakepkg", MODULE_SOFT)
    site = tmp_path / "site"
    site.mkdir()
    (site / "fakepkg.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    info = site / "fakepkg_gpu-1.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Name: fakepkg-gpu\nVersion: 1.1\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    with pytest.raises(NotFound):
        detect(ctx, tags="fakepkg,fakepkg-cpu")
    [record] = detect_soft(ctx, tags="fakepkg,fakepkg-gpu")
    assert record.version == "1.1" and record.full_path.endswith(".so")


def test_python_module_not_installed(ctx, soft_repo, monkeypatch):
    soft_repo("lib.python.fakepkg", MODULE_SOFT)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    with pytest.raises(NotFound) as info:
        detect(ctx, "lib.python.fakepkg")
    assert "module fakepkg in" in str(info.value)


def test_python_module_in_a_search_dir_and_by_full_path(ctx, soft_repo, tmp_path, monkeypatch):
    soft_repo("lib.python.fakepkg", MODULE_SOFT)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    site = tmp_path / "extra"
    package = fake_package(site, "fakepkg", init_version="2.0")
    [record] = detect_soft(ctx, "lib.python.fakepkg", search_dirs=[str(site)])
    assert record.full_path == str(package) and record.env["PYTHONPATH"] == str(site)
    [again] = detect_soft(ctx, "lib.python.fakepkg", full_path=str(package / "__init__.py"))
    assert again.uid == record.uid
    with pytest.raises(NotFound):
        detect_soft(ctx, "lib.python.fakepkg", full_path=str(tmp_path))
    assert any("is not the module" in w for w in ctx.reporter.warnings)


def test_builtin_onnxruntime_soft_with_a_fake_package_on_pythonpath(cli_json, tmp_path):
    site = tmp_path / "site"
    fake_package(site, "onnxruntime", dist="onnxruntime", dist_version="9.9.9")
    code, data = cli_json("detect", "soft", "--tags=lib,python-package,onnxruntime", env={"PYTHONPATH": os.pathsep.join(
        [str(site), str(Path(__file__).resolve().parent.parent)])})
    assert code == 0, data
    [env] = data["envs"]
    assert env["soft"] == "lib.python.onnxruntime" and env["version"] == "9.9.9"
    assert {"lib", "python-package", "onnxruntime", "onnxruntime-cpu"} <= set(env["tags"])
    assert env["env"]["CK_ENV_PYTHON_PACKAGE_ONNXRUNTIME_SET"] == "1"
    assert env["env"]["PYTHONPATH"] == str(site)


# -- the real interpreter ----------------------------------------------------------------------
def test_real_interpreter_is_detected(ctx, cli_json):
    report = detect(ctx, "compiler.python")
    running = [r for r in report.envs if os.path.samefile(r.full_path, sys.executable)]
    assert running, [r.full_path for r in report.envs]
    record = running[0]
    assert record.version == platform.python_version()
    major, minor, _ = platform.python_version_tuple()
    assert {"compiler", "python", "lang-python", f"v{major}", f"v{major}.{minor}"} <= set(record.tags)
    assert record.env["CK_ENV_COMPILER_PYTHON_FILE"] == record.full_path
    assert record.env["CK_PYTHON_VER"] == f"{major}.{minor}"
    assert report.subprocesses <= len(report.envs) - 1  # the running interpreter needs no subprocess
    again = detect(ctx, "compiler.python")
    assert again.subprocesses == 0  # other interpreters' probes are cached in $CKX_HOME/cache
    assert {r.uid for r in again.envs} == {r.uid for r in report.envs}
    # the CK command line as typed
    code, data = cli_json("detect", "soft:compiler.python", f"--full_path={sys.executable}")
    assert code == 0 and data["envs"][0]["uid"] == record.uid


def test_wrapper_script_given_as_full_path_records_the_real_interpreter(ctx, tmp_path):
    shim = tmp_path / "shims" / "python3"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    [record] = detect_soft(ctx, "compiler.python", full_path=str(shim))
    assert os.path.samefile(record.full_path, sys.executable)
    assert record.full_path != str(shim)


def test_not_a_python_interpreter(ctx, tmp_path):
    fake = fake_executable(tmp_path / "bin", "python3", "hello")
    with pytest.raises(NotFound):
        detect_soft(ctx, "compiler.python", full_path=str(fake))
    assert any(str(fake) in w for w in ctx.reporter.warnings)


# -- marker files ------------------------------------------------------------------------------
MARKER_SOFT = {
    "name": "Fake dataset", "tags": ["dataset", "fakedata"], "env_prefix": "CK_ENV_DATASET_FAKE",
    "detect": {"kind": "marker", "files": ["MARKER.txt", "labels.txt"], "depth": 3, "version": "1"},
    "env": {"{prefix}": "{dir}", "{prefix}_LABELS": "{dir}/labels.txt"},
}


def _marker_at(root: Path, depth: int, *, labels: bool = True) -> Path:
    directory = root.joinpath(*[f"d{i}" for i in range(depth)])
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "MARKER.txt").write_text("x")
    if labels:
        (directory / "labels.txt").write_text("x")
    return directory


def test_marker_found_at_depth_3_not_at_4(ctx, soft_repo, tmp_path):
    soft_repo("dataset.fake", MARKER_SOFT)
    shallow = _marker_at(tmp_path / "a", 3)
    _marker_at(tmp_path / "b", 4)
    [record] = detect_soft(ctx, "dataset.fake", search_dirs=[str(tmp_path / "a"), str(tmp_path / "b")])
    assert record.full_path == str(shallow / "MARKER.txt")
    assert record.env["CK_ENV_DATASET_FAKE"] == str(shallow)
    assert record.env["CK_ENV_DATASET_FAKE_LABELS"] == str(shallow / "labels.txt")
    with pytest.raises(NotFound):
        detect_soft(ctx, "dataset.fake", search_dirs=[str(tmp_path / "b")])
    [deep] = detect_soft(ctx, "dataset.fake", search_dirs=[str(tmp_path / "b")], search_depth=4)
    assert deep.full_path.endswith("d3/MARKER.txt")


def test_marker_needs_its_sibling_files_and_skips_hidden_dirs(ctx, soft_repo, tmp_path):
    soft_repo("dataset.fake", MARKER_SOFT)
    _marker_at(tmp_path / "x", 1, labels=False)
    _marker_at(tmp_path / "x" / ".hidden", 0)
    with pytest.raises(NotFound):
        detect_soft(ctx, "dataset.fake", search_dirs=[str(tmp_path / "x")])
    assert any("labels.txt" in w for w in ctx.reporter.warnings)


def test_marker_without_any_search_directory(ctx, soft_repo, tmp_path):
    soft_repo("dataset.fake", MARKER_SOFT)
    with pytest.raises(NotFound) as info:
        detect_soft(ctx, "dataset.fake")
    assert "--search_dir" in (info.value.hint or "")


def test_builtin_imagenet_val_as_ck_typed_it(cli_json, tmp_path):
    images = tmp_path / "imagenet" / "val"
    images.mkdir(parents=True)
    for number in (1, 2, 3):
        (images / f"ILSVRC2012_val_{number:08d}.JPEG").write_bytes(b"\xff\xd8")
    (images / "val_map.txt").write_text("ILSVRC2012_val_00000001.JPEG 65\n")
    code, data = cli_json("detect", "soft:dataset.imagenet.val", "--force_version=2012", "--extra_tags=full",
                          f"--search_dir={tmp_path}")
    assert code == 0, data
    [env] = data["envs"]
    assert env["version"] == "2012" and env["full_path"] == str(images / "ILSVRC2012_val_00000001.JPEG")
    assert {"image-classification", "dataset", "imagenet", "2012", "val", "raw", "original", "jpg", "full",
            "v2012"} <= set(env["tags"])
    assert env["env"]["CK_ENV_DATASET_IMAGENET_VAL"] == str(images)
    assert env["env"]["CK_ENV_DATASET_IMAGENET_COUNT"] == "3"  # from its customize.py
    assert env["env"]["CK_CAFFE_IMAGENET_VAL_TXT"] == str(images / "val_map.txt")


def test_builtin_imagenet_aux(ctx, tmp_path):
    aux = tmp_path / "aux"
    aux.mkdir()
    for name in ("val.txt", "synset_words.txt", "synsets.txt"):
        (aux / name).write_text("x\n")
    [record] = detect_soft(ctx, "dataset.imagenet.aux", full_path=str(tmp_path))
    assert record.env["CK_ENV_DATASET_IMAGENET_AUX"] == str(aux)
    assert record.env["CK_CAFFE_IMAGENET_SYNSET_WORDS_TXT"] == str(aux / "synset_words.txt")
    assert record.env["CK_CAFFE_IMAGENET_SYNSETS_TXT"] == str(aux / "synsets.txt")


# -- selecting soft entries --------------------------------------------------------------------
def test_usage_errors_and_unknown_softs(ctx, cli):
    with pytest.raises(UsageError):
        detect(ctx)
    with pytest.raises(NotFound):
        detect(ctx, "no.such.soft")
    with pytest.raises(NotFound):
        detect(ctx, tags="no-soft-has-this-tag")
    with pytest.raises(UsageError, match="cannot provide"):
        detect(ctx, "compiler.python", tags="numpy")
    assert cli("detect", "soft").returncode == 2
    assert cli("detect", "soft:compiler.python", "--search_depth=deep").returncode == 2


def test_bad_soft_meta_names_the_file(ctx, soft_repo):
    entry = soft_repo("broken.soft", {"tags": ["brokensoft"], "detect": {"kind": "telepathy"}})
    with pytest.raises(MetaError) as info:
        detect(ctx, "broken.soft")
    assert str(entry / "meta.json") in str(info.value) and "detect.kind" in str(info.value)
    assert find_softs(ctx, "brokensoft") == []  # skipped with a warning when searching by tags
    assert any("broken.soft" in w for w in ctx.reporter.warnings)


@pytest.mark.parametrize(("detect_section", "field"), [
    ({"kind": "module"}, "detect"),  # a module soft needs its module
    ({"kind": "executable", "names": []}, "detect.names"),
    ({"kind": "executable", "names": "fakecc"}, "detect.names"),
    ({"kind": "executable", "names": ["fakecc"], "version_regex": "(unclosed"}, "detect.version_regex"),
    ({"kind": "marker", "files": ["a"], "search_dirs": [3]}, "detect.search_dirs.0"),
    ({"kind": "module", "module": "m", "distribution_tags": {"m": "tag"}}, "detect.distribution_tags.m"),
], ids=["module-without-module", "no-names", "names-not-a-list", "bad-regex", "dir-not-a-string", "dist-tags"])
def test_the_soft_schema_is_the_one_validator(ctx, soft_repo, detect_section, field):
    entry = soft_repo("schema.soft", {"tags": ["schemasoft"], "detect": detect_section})
    with pytest.raises(MetaError) as info:
        detect(ctx, "schema.soft")
    assert f"{entry / 'meta.json'}: field '{field}'" in str(info.value)


def test_unknown_template_placeholder_names_the_field(ctx, soft_repo, tmp_path):
    soft_repo("compiler.fakecc", {**EXE_SOFT, "env": {"X": "{no_such_value}"}})
    exe = fake_executable(tmp_path / "bin", "fakecc", "fakecc version 1.0")
    with pytest.raises(MetaError, match=r"env\.X.*no_such_value"):
        detect(ctx, "compiler.fakecc", full_path=str(exe))


def test_ck_format_soft_without_detect_is_refused(ctx, ck_repo_factory):
    root = ck_repo_factory("ckr", {"soft": [("lib.ck.only", "3a1b2c3d4e5f6071", {"tags": ["ckonly"]})]})
    assert access({"action": "add", "module": "repo", "entry": "ckr", "path": str(root)}, context=ctx)["return"] == 0
    ctx.forget_registry()
    with pytest.raises(UsageError, match="no 'detect' section"):
        detect(ctx, "lib.ck.only")
    assert find_softs(ctx, "ckonly") == []


def test_builtin_soft_entries_are_valid():
    from ckx.store.entry import validate_meta
    from ckx.core.jsonio import read_json

    root = Path(__file__).resolve().parent.parent / "soft"
    aliases = set()
    for meta_path in sorted(root.glob("*/meta.json")):
        meta = read_json(meta_path)
        validate_meta(meta, "soft", meta_path)
        assert meta["alias"] == meta_path.parent.name
        aliases.add(meta["alias"])
        if (meta_path.parent / "customize.py").is_file():
            load_hooks(meta_path.parent / "customize.py")
    assert {"compiler.python", "lib.python.numpy", "lib.python.onnxruntime", "lib.python.torch", "lib.python.cv2",
            "lib.python.loadgen", "lib.python.onnx", "model.onnx", "model.pytorch", "model.tf",
            "dataset.imagenet.val", "dataset.imagenet.aux"} <= aliases


# -- virtual environments ----------------------------------------------------------------------
def test_venv_interpreter_is_itself_and_a_new_pth_file_invalidates_the_cached_probe(ctx, soft_repo, tmp_path,
                                                                                   monkeypatch):
    import subprocess

    monkeypatch.delenv("PYTHONPATH", raising=False)
    soft_repo("lib.python.fakepkg", MODULE_SOFT)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120,
                   capture_output=True)
    python = venv / "bin" / "python"
    [interpreter] = detect_soft(ctx, "compiler.python", full_path=str(python), extra_tags=["venv-test"])
    assert interpreter.full_path == str(python) and interpreter.meta["python_prefix"] == str(venv)
    assert "venv-test" in interpreter.tags
    assert detect(ctx, "compiler.python", full_path=str(python)).subprocesses == 0  # the cached probe
    with pytest.raises(NotFound):
        detect_soft(ctx, "lib.python.fakepkg", python=str(python))
    # a .pth file in the venv's site-packages adds a directory: the cached probe must notice
    [site] = list(venv.glob("lib/python*/site-packages"))
    extra = tmp_path / "extra-dir"
    fake_package(extra, "fakepkg", init_version="3.2.1")
    (site / "extra.pth").write_text(f"# a comment\nimport os\n{extra}\n")
    report = detect(ctx, "lib.python.fakepkg", python=str(python))
    [record] = report.envs
    assert record.version == "3.2.1" and record.deps == {"python": interpreter.uid}
    assert "PYTHONPATH" not in record.env  # the interpreter finds it by itself
    assert report.subprocesses == 1


def test_probe_cache_is_keyed_by_pythonpath(ctx, soft_repo, tmp_path, monkeypatch):
    soft_repo("lib.python.fakepkg", MODULE_SOFT)
    first, second = tmp_path / "first", tmp_path / "second"
    fake_package(first, "fakepkg", init_version="1.0")
    fake_package(second, "fakepkg", init_version="2.0")
    monkeypatch.setenv("PYTHONPATH", str(first))
    assert detect_soft(ctx, "lib.python.fakepkg")[0].version == "1.0"
    monkeypatch.setenv("PYTHONPATH", str(second))
    assert detect_soft(ctx, "lib.python.fakepkg")[0].version == "2.0"
    assert len(find_envs(ctx, tags="fakepkg")) == 2


def test_python_option_and_forced_python_dep(cli_json, ctx, soft_repo, tmp_path):
    soft_repo("lib.python.fakepkg", MODULE_SOFT)
    site = tmp_path / "site"
    fake_package(site, "fakepkg", init_version="1.5")
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(Path(__file__).resolve().parent.parent)])}
    code, data = cli_json("detect", "soft:lib.python.fakepkg", f"--python={sys.executable}", env=env)
    assert code == 0, data
    python_uid = data["envs"][0]["deps"]["python"]
    code, data = cli_json("detect", "soft:lib.python.fakepkg", f"--deps.python={python_uid}", env=env)
    assert code == 0 and data["envs"][0]["deps"] == {"python": python_uid} and not data["envs"][0]["new"]
    code, data = cli_json("detect", "soft:lib.python.fakepkg", "--deps.python=0000000000000000", env=env)
    assert code == 3


def test_find_candidates_hook_adds_paths(ctx, soft_repo, tmp_path, monkeypatch):
    hidden = fake_executable(tmp_path / "opt" / "fakecc-7", "fakecc", "fakecc version 7.0")
    soft_repo("compiler.fakecc", EXE_SOFT, customize=f"""
        def find_candidates(*, search_dirs, environ):
            return [{str(hidden)!r}]
    """)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    [record] = detect_soft(ctx, "compiler.fakecc")
    assert record.full_path == str(hidden) and record.version == "7.0"


def test_a_failing_version_command_is_a_warning(ctx, soft_repo, tmp_path):
    soft_repo("compiler.fakecc", EXE_SOFT, customize="""
        def detect_version(*, full_path, run):
            return run([str(full_path), "--version"])
    """)
    exe = fake_executable(tmp_path / "bin", "fakecc", "boom", code=3)
    with pytest.raises(NotFound):
        detect_soft(ctx, "compiler.fakecc", full_path=str(exe))
    assert any("exited with status 3" in w and str(exe) in w for w in ctx.reporter.warnings)


def test_marker_glob_patterns(ctx, tmp_path):
    models = tmp_path / "models" / "resnet"
    models.mkdir(parents=True)
    (models / "resnet50_v1.onnx").write_bytes(b"onnx")
    (models / "notes.txt").write_text("x")
    [record] = detect_soft(ctx, "model.onnx", search_dirs=[str(tmp_path / "models")])
    assert record.env["ML_MODEL_FILE"] == str(models / "resnet50_v1.onnx")
    assert record.env["CK_ENV_ONNX_MODEL_ONNX_FILEPATH"] == str(models / "resnet50_v1.onnx")
    assert record.env["ML_MODEL_FRAMEWORK"] == "onnx" and record.version is None
    (models / "weights.pt").write_bytes(b"pt")
    [torch_model] = detect_soft(ctx, "model.pytorch", full_path=str(models / "weights.pt"))
    assert torch_model.env["CK_ENV_PYTORCH_MODEL_PYTORCH_FILEPATH"] == str(models / "weights.pt")
    with pytest.raises(NotFound):
        detect_soft(ctx, "model.pytorch", full_path=str(models / "notes.txt"))


def test_module_lookup_follows_import_precedence_and_newest_metadata(ctx, soft_repo, tmp_path, monkeypatch):
    soft_repo("lib.python.fakepkg", MODULE_SOFT)
    portion, regular = tmp_path / "portion", tmp_path / "regular"
    (portion / "fakepkg").mkdir(parents=True)  # a namespace portion first on the path
    package = fake_package(regular, "fakepkg", dist="fakepkg", dist_version="0.5")
    stale = regular / "fakepkg-0.1.dist-info"
    stale.mkdir()
    (stale / "METADATA").write_text("Name: fakepkg\nVersion: 0.1\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(portion), str(regular)]))
    [record] = detect_soft(ctx, "lib.python.fakepkg")
    assert record.full_path == str(package) and record.version == "0.5"


def test_in_process_description_equals_the_subprocess_probe(tmp_path, monkeypatch):
    import subprocess

    from ckx.software.probing import _PROBE, _describe_running

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "missing")]))
    (tmp_path / "a").mkdir()
    child = subprocess.run([sys.executable, "-S", "-c", _PROBE], capture_output=True, text=True, check=True,
                           timeout=60, cwd=tmp_path)
    assert json.loads(child.stdout) == _describe_running()
