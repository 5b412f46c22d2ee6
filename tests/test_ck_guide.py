"""The lines of CK's guides that users paste, run as typed with `python -m ckx` on a throwaway home."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from httpserver import http_server  # noqa: F401  (the fixture)
from gitenv import GIT_IDENTITY, hermetic_git  # noqa: F401  (the fixture keeps git hermetic)

ROOT = Path(__file__).resolve().parent.parent


def ok_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def fake_tool(directory: Path, name: str, output: str) -> Path:
    """An executable shell script that prints ``output`` whatever it is asked."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\n")
    path.chmod(0o755)
    return path


def envs_of(cli, soft: str) -> list[dict]:
    shown = ok_json(cli("show", "env", "--json"))
    return [e for e in shown["envs"] if e["soft"] == soft]


# -- detect soft:compiler.gcc / tool.cmake / tool.git ----------------------------------------------
@pytest.mark.skipif(shutil.which("gcc") is None, reason="no gcc on this machine")
def test_detect_gcc_with_full_path_of_which_gcc_records_its_version_and_ck_variables(cli):
    gcc = shutil.which("gcc")
    expected = subprocess.run([gcc, "-dumpfullversion", "-dumpversion"], capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip()
    data = ok_json(cli("detect", "soft:compiler.gcc", f"--full_path={gcc}", "--json"))
    [env] = data["envs"]
    assert env["soft"] == "compiler.gcc" and env["version"] == expected and env["full_path"] == gcc
    [recorded] = envs_of(cli, "compiler.gcc")
    variables = recorded["env"]
    assert variables["CK_CC"] == "gcc" and variables["CK_CXX"] == "g++"
    assert variables["CK_ENV_COMPILER_GCC_BIN"] == os.path.dirname(gcc)
    assert variables["CK_ENV_COMPILER_GCC"] == os.path.dirname(os.path.dirname(gcc))
    assert variables["CK_COMPILER_VERSION"] == expected
    assert {"compiler", "gcc", "lang-c", f"v{expected}"} <= set(recorded["tags"])


def test_a_cross_gcc_with_a_version_suffix_names_its_own_gxx_and_binutils(cli, tmp_path):
    gcc = fake_tool(tmp_path / "bin", "aarch64-linux-gnu-gcc-13", "13.2.0")
    [env] = ok_json(cli("detect", "soft:compiler.gcc", f"--full_path={gcc}", "--json"))["envs"]
    assert env["version"] == "13.2.0"
    variables = envs_of(cli, "compiler.gcc")[0]["env"]
    assert variables["CK_CC"] == "aarch64-linux-gnu-gcc-13"
    assert variables["CK_CXX"] == "aarch64-linux-gnu-g++-13"
    assert variables["CK_CXX_FULL_PATH"] == str(tmp_path / "bin" / "aarch64-linux-gnu-g++-13")
    assert variables["CK_AR"] == "aarch64-linux-gnu-ar" and variables["CK_COMPILER_POSTFIX"] == "-13"


@pytest.mark.skipif(shutil.which("git") is None, reason="no git on this machine")
def test_detect_git_on_path_records_the_version_git_reports(cli):
    reported = subprocess.run(["git", "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    version = reported.split()[2]
    [env] = ok_json(cli("detect", "soft:tool.git", "--json"))["envs"]
    assert version.startswith(env["version"]) and os.path.samefile(env["full_path"], shutil.which("git"))
    variables = envs_of(cli, "tool.git")[0]["env"]
    assert variables["CK_ENV_TOOL_GIT_BIN"] == os.path.dirname(env["full_path"])


def test_detect_cmake_reads_cmakes_version_line(cli, tmp_path):
    cmake = fake_tool(tmp_path / "tools" / "bin", "cmake", "cmake version 3.27.1\n\nCMake suite maintained by Kitware")
    path = os.pathsep.join([str(cmake.parent), os.environ.get("PATH", "")])
    [env] = ok_json(cli("detect", "soft:tool.cmake", "--json", env={"PATH": path}))["envs"]
    assert env["version"] == "3.27.1" and env["full_path"] == str(cmake)
    variables = envs_of(cli, "tool.cmake")[0]["env"]
    assert variables["CK_ENV_TOOL_CMAKE"] == str(tmp_path / "tools")
    assert variables["CK_ENV_TOOL_CMAKE_BIN"] == str(cmake.parent) and variables["CK_CMAKE"] == str(cmake)
    # CK's guide asks by tags; a program that prints no cmake version line is skipped with a warning
    liar = fake_tool(tmp_path / "liar", "cmake", "something else 9.9")
    proc = cli("detect", "soft", "--tags=tool,cmake", f"--full_path={liar}")
    assert proc.returncode != 0 and "no version in the output" in proc.stderr


@pytest.mark.skipif(shutil.which("cmake") is None, reason="no cmake on this machine")
def test_detect_the_installed_cmake(cli):
    first = subprocess.run(["cmake", "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    version = first.split()[2]
    [env] = ok_json(cli("detect", "soft:tool.cmake", "--quiet", "--json"))["envs"]
    assert env["version"] == version


# -- setup kernel, detect platform.os ------------------------------------------------------------
def test_setup_kernel_accepts_install_to_env_and_says_what_ckx_does(cli):
    proc = cli("setup", "kernel", "--var.install_to_env=yes")
    assert proc.returncode == 0, proc.stderr
    assert "install_to_env" in proc.stdout and "always records an env" in proc.stdout
    other = cli("setup", "kernel", "--var.install_to_env=yes", "--var.no_such_setting=1")
    assert other.returncode == 0 and "no_such_setting" in other.stderr
    assert cli("setup", "kernel", "--vars.install_to_env=yes").returncode == 2  # a typo is still a usage error


def test_detect_platform_os_is_detect_platform_and_takes_platform_init_uoa(cli):
    proc = cli("detect", "platform.os", "--platform_init_uoa=generic-linux-dummy")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("platform ") and "platform_init_uoa=generic-linux-dummy" in proc.stdout
    first = ok_json(cli("detect", "platform.os", "--platform_init_uoa=generic-linux-dummy", "--json"))
    second = ok_json(cli("detect", "platform", "--json"))
    assert first["platform"]["platform_id"] == second["platform"]["platform_id"]


# -- pull repo:mlcommons@ck-venv, create venv --template=mlperf-inference-1.1-tvm ----------------------
def test_ck_venv_is_in_the_catalog_and_offline_its_pull_contacts_nothing(cli, ckx_home):
    from ckx.sharing.catalog import load_catalog, url_for_alias

    catalog = load_catalog()
    assert url_for_alias("mlcommons@ck-venv", catalog)[0] == "https://github.com/mlcommons/ck-venv"
    assert url_for_alias("ck-venv", catalog)[0] == "https://github.com/mlcommons/ck-venv"
    proc = cli("pull", "repo:mlcommons@ck-venv", env={"CKX_OFFLINE": "1"})
    assert proc.returncode == 1
    assert "not cloning https://github.com/mlcommons/ck-venv" in proc.stderr
    assert "--url=file://" in proc.stderr and "ckx add repo:mlcommons@ck-venv --path=" in proc.stderr
    assert not (ckx_home / "repos" / "mlcommons@ck-venv").exists()


def test_the_tvm_template_is_the_mlperf_one_with_tvm_for_the_tvm_program(cli, ctx):
    from ckx.software.venv import template_requirements

    base = template_requirements(ctx, "mlperf-inference")
    tvm = template_requirements(ctx, "mlperf-inference-1.1-tvm")
    assert tvm[:len(base)] == base and any(r.startswith("apache-tvm") for r in tvm[len(base):])
    backends = (ROOT / "programs" / "image-classification-base" / "harness" / "backends.py").read_text()
    assert '"tvm"' in backends  # the harness has the backend the template is for
    program = json.loads((ROOT / "programs" / "image-classification-tvm-cpu" / "meta.json").read_text())
    assert program["run_vars"]["MLPERF_BACKEND"] == "tvm"
    # as typed (with --without_pip, so that nothing is installed): the name is known, the refusal is about pip
    proc = cli("create", "venv:mlperf-inference", "--template=mlperf-inference-1.1-tvm", "--without_pip")
    assert proc.returncode == 2 and "template mlperf-inference-1.1-tvm installs packages with pip" in proc.stderr
    assert "unknown venv template" not in proc.stderr


# -- zip repo:NAME, unzip repo ----------------------------------------------------------------------
def test_zip_repo_writes_ckr_name_zip_beside_the_experiments_archive_and_never_over_a_file(cli, tmp_path):
    assert cli("add", "repo:my-results", "--quiet").returncode == 0
    assert cli("add", "experiment:resnet", "--repo=my-results", "--tags=mlperf").returncode == 0
    work = tmp_path / "work"
    work.mkdir()
    assert cli("zip", "experiment:resnet", cwd=work).returncode == 0  # the guide's line before: ckr.zip
    experiments = (work / "ckr.zip").read_bytes()
    proc = cli("zip", "repo:my-results", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "ckr-my-results.zip" in proc.stdout and (work / "ckr.zip").read_bytes() == experiments
    assert "ckx-repo.json" in zipfile.ZipFile(work / "ckr-my-results.zip").namelist()
    again = cli("zip", "repo:my-results", cwd=work)
    assert again.returncode == 2 and "already exists" in again.stderr and "--overwrite" in again.stderr
    assert cli("zip", "experiment:resnet", cwd=work).returncode == 2  # ckr.zip is not replaced either
    assert cli("zip", "repo:my-results", "--overwrite", cwd=work).returncode == 0


def test_unzip_repo_reads_ckr_zip_in_the_current_directory(cli, tmp_path):
    assert cli("add", "experiment:shared-run", "--tags=mlperf").returncode == 0
    work = tmp_path / "work"
    work.mkdir()
    empty = cli("unzip", "repo", cwd=work, env={"CKX_HOME": str(tmp_path / "other")})
    assert empty.returncode == 3 and "no ckr.zip" in empty.stderr
    assert cli("zip", "experiment:shared-run", cwd=work).returncode == 0
    other = {"CKX_HOME": str(tmp_path / "other")}
    proc = cli("unzip", "repo", cwd=work, env=other)
    assert proc.returncode == 0, proc.stderr
    found = ok_json(cli("search", "experiment", "--tags=mlperf", "--json", env=other))
    assert [e["alias"] for e in found["entries"] if e["repo"] == "local"] == ["shared-run"]
    # --file= (as the pull hints write it) names the archive too
    (work / "ckr.zip").rename(work / "elsewhere.zip")
    missing = cli("unzip", "repo", cwd=work, env=other)
    assert missing.returncode == 3
    named = cli("unzip", "repo", "--file=elsewhere.zip", cwd=work, env=other)
    assert named.returncode == 0 and "skipped" in named.stdout


# -- run program --help -----------------------------------------------------------------------------
def test_run_program_help_lists_the_programs_and_their_command_keys(cli):
    proc = cli("run", "program", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "builtin:program:image-classification-onnx-cpu" in proc.stdout
    assert "accuracy-offline" in proc.stdout and "image-classification-base" not in proc.stdout
    assert "--cmd_key=TEXT" in proc.stdout  # the action's own options follow


@pytest.mark.parametrize("name", ["image-classification-onnx-cpu", "mlperf-inference-bench-image-classification-onnx-cpu"])
def test_run_program_name_help_prints_its_command_keys_and_variables(cli, name):
    proc = cli("run", f"program:{name}", "--help")
    assert proc.returncode == 0, proc.stderr
    for key in ("accuracy-offline", "performance-singlestream", "performance-server"):
        assert f"  {key}" in proc.stdout
    assert "MLPERF_BACKEND=onnxruntime" in proc.stdout and "--dep_add_tags.NAME" in proc.stdout
    data = ok_json(cli("run", f"program:{name}", "--help", "--json"))
    assert "accuracy-offline" in data["program"]["command_keys"] and data["program"]["runs"] is True
    assert cli("benchmark", f"program:{name}", "--help").stdout.count("accuracy-offline") >= 1
    assert cli("run", "program:no-such-program", "--help").returncode == 3


# -- offline -----------------------------------------------------------------------------------------
def make_package_repo(root: Path, packages: dict[str, dict], programs: dict[str, dict] | None = None) -> Path:
    (root / "ckx-repo.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "ckx-repo.json").write_text(json.dumps({"name": "guide-pkgs", "uid": secrets.token_hex(8),
                                                     "schema_version": 1}))
    for module, items in (("packages", packages), ("programs", programs or {})):
        for alias, meta in items.items():
            entry = root / module / alias
            entry.mkdir(parents=True)
            (entry / "meta.json").write_text(json.dumps({"alias": alias, "uid": secrets.token_hex(8),
                                                          "schema_version": 1, **meta}))
    return root


def test_offline_install_and_run_contact_no_server_and_say_what_they_skipped(cli, tmp_path, http_server):
    url = http_server.put("files/data.bin", b"payload")
    index = http_server.url_for("simple/")
    packages = {
        "guide-download": {"tags": ["guide-download"], "source": {"kind": "download", "urls": [url]}},
        "guide-pip": {"tags": ["guide-pip"], "deps": {"python": {"tags": "compiler,python", "sort": 0}},
                      "source": {"kind": "pip", "requirements": ["ckx-guide-not-there"],
                                 "pip_args": ["--index-url", index]}},
    }
    programs = {"guide-prog": {"tags": ["guide"], "deps": {"data": {"tags": "guide-download"}},
                               "run_cmds": {"default": {"argv": ["{python}", "-c", "print('ran')"]}}}}
    root = make_package_repo(tmp_path / "pkgs", packages, programs)
    assert cli("add", "repo:guide-pkgs", f"--path={root}", "--quiet").returncode == 0
    offline = {"CKX_OFFLINE": "1"}
    download = cli("install", "package:guide-download", env=offline)
    assert download.returncode != 0 and "offline" in download.stderr and "not tried (offline)" in download.stderr
    pip = cli("install", "package:guide-pip", env=offline)
    assert pip.returncode != 0 and "not running pip install ckx-guide-not-there" in pip.stderr
    assert "--local_path=" in pip.stderr
    run = cli("run", "program:guide-prog", "--cmd_key=default", "--offline")
    assert run.returncode != 0 and "offline" in run.stderr
    assert http_server.requests == []
    # the same without offline reaches the server: the assertion above could fail
    assert cli("install", "package:guide-download").returncode == 0
    assert [r.path for r in http_server.requests] == ["/files/data.bin"]
    proc = cli("install", "package:guide-pip", "--quiet")
    assert proc.returncode != 0 and any(r.path.startswith("/simple/") for r in http_server.requests)


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *GIT_IDENTITY, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def make_remote(root: Path, name: str) -> Path:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    (root / "ckx-repo.json").write_text(json.dumps({"name": name, "uid": secrets.token_hex(8), "schema_version": 1}))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def test_offline_pull_clones_local_urls_and_skips_remote_origins_without_contacting_them(cli, tmp_path, ckx_home,
                                                                                       http_server):
    remote = make_remote(tmp_path / "remote", "team")
    proc = cli("pull", "repo:team", f"--url={remote.as_uri()}", env={"CKX_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr  # file:// is this machine: allowed offline
    checkout = ckx_home / "repos" / "team"
    remote_url = http_server.url_for("team.git")
    git(checkout, "remote", "set-url", "origin", remote_url)
    skipped = cli("pull", "repo:team", "--offline", "--json")
    data = ok_json(skipped)
    assert data["repo"]["state"] == "skipped" and data["skipped"] == ["team"]
    assert "not fetching team" in skipped.stderr
    new = cli("pull", "repo:other", f"--url={http_server.url_for('other.git')}", env={"CKX_OFFLINE": "1"})
    assert new.returncode == 1 and "not contacted (offline)" in new.stderr
    assert http_server.requests == []
    # online, the same pulls go to the server (and fail there, naming the local ways forward)
    failed = cli("pull", "repo:team")
    assert failed.returncode != 0 and http_server.requests and "--offline" in failed.stderr
    assert ok_json(cli("list", "repo", "--json"))  # the registered repo is still there
    new = cli("pull", "repo:other", f"--url={http_server.url_for('other.git')}")
    assert new.returncode != 0
    for way in ("--url=file://", "ckx add repo:other --path=", "ckx unzip repo --file="):
        assert way in new.stderr
    assert not (ckx_home / "repos" / "other").exists()


@pytest.mark.slow
def test_offline_venv_template_runs_pip_without_the_index(cli, ckx_home, http_server):
    index = http_server.url_for("simple/")
    proc = cli("create", "venv:off", "--template=mlperf-inference",
               env={"CKX_OFFLINE": "1", "PIP_INDEX_URL": index, "PIP_FIND_LINKS": ""})
    # a fresh venv with its own pip and no index: the template cannot be installed, and nothing was fetched
    assert proc.returncode != 0 and "offline: pip runs with --no-index" in proc.stdout
    assert http_server.requests == [] and not (ckx_home / "venvs" / "off").exists()


# -- the same lines with the real mlcommons@ck-mlops registered (its softs and programs share CK's names) ----
CK_MLOPS = ROOT.parent / "shared" / "ck-mlops" / "repo"


@pytest.mark.skipif(not (CK_MLOPS / ".ckr.json").is_file(), reason="no copy of mlcommons@ck-mlops beside the checkout")
def test_guide_lines_after_ck_mlops_is_registered(cli, tmp_path):
    assert cli("add", "repo:mlcommons@ck-mlops", f"--path={CK_MLOPS}", "--quiet").returncode == 0
    # ck-mlops has soft:tool.cmake and soft:compiler.gcc too (CK's customize.py, which ckx does not run)
    cmake = fake_tool(tmp_path / "bin", "cmake", "cmake version 3.27.1")
    [env] = ok_json(cli("detect", "soft:tool.cmake", f"--full_path={cmake}", "--json"))["envs"]
    assert env["soft"] == "tool.cmake" and env["version"] == "3.27.1"
    gcc = fake_tool(tmp_path / "bin", "gcc", "12.2.0")
    assert ok_json(cli("detect", "soft:compiler.gcc", f"--full_path={gcc}", "--json"))["envs"][0]["version"] == "12.2.0"
    ck_only = cli("detect", "mlcommons@ck-mlops:soft:tool.cmake")
    assert ck_only.returncode == 2 and "CK's format" in ck_only.stderr  # asked for by repo: said, not run
    listing = ok_json(cli("run", "program", "--help", "--json"))["programs"]
    assert not listing[0]["ck_format"] and listing[-1]["ck_format"] and len(listing) > 150
    proc = cli("run", "program:mlperf-inference-bench-image-classification-onnx-cpu", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("program builtin:program:image-classification-onnx-cpu") and "  accuracy-offline" in proc.stdout
    ck = cli("run", "mlcommons@ck-mlops:program:mlperf-inference-bench-image-classification-onnx-cpu", "--help")
    assert ck.returncode == 0 and "ckx does not run it as it is" in ck.stdout
