"""CK-format packages of the real mlcommons@ck-mlops repo: tiers, native installs, CK scripts, refusals.

The repo is copied from ../shared/ck-mlops/repo once per module and registered in each test's home (with
``ckx add repo --path=``, or pulled from a git remote on disk). Every download goes to a loopback HTTP
server through settings.json's ``url_map``; git sources are bare repos on disk; wheels are built here.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import time
import urllib.parse
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ROOT
from wheels import build_wheel

from ckx.api import access
from ckx.core.home import Home
from ckx.core.errors import ChecksumMismatch, CkxError, DownloadError, MetaError, UsageError
from ckx.software.ckinstall import LOG_NAME
from ckx.software.ckpackage import CK_SCRIPT, NATIVE, REFUSED, CkPackage, ck_scripts_allowed, install_tier
from ckx.software.envs import find_envs, record_env
from ckx.software.resolve import detect_soft, install
from ckx.store.repo import Repo
from ckx.store.context import Context
from ckx.store.repo_actions import add_repo

CK_MLOPS = Path(os.environ.get("CKX_CK_MLOPS_REPO") or ROOT.parent / "shared" / "ck-mlops" / "repo")
if not (CK_MLOPS / ".ckr.json").is_file():
    CK_MLOPS = Path("/work/shared/ck-mlops/repo")
pytestmark = pytest.mark.skipif(not (CK_MLOPS / ".ckr.json").is_file(), reason="the ck-mlops repo is not on disk")

REPO_NAME = "ck-mlops"


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def ck_copy(tmp_path_factory) -> Path:
    """A writable copy of ck-mlops (the tests generate checksums into it and make it a git remote)."""
    target = tmp_path_factory.mktemp("ck") / "ck-mlops"
    shutil.copytree(CK_MLOPS, target, symlinks=True)
    for folder, dirs, files in os.walk(target):
        for name in dirs + files:
            path = Path(folder) / name
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return target


@pytest.fixture
def ck_repo(ctx, ck_copy) -> Path:
    """The copy registered in place (``ckx add repo:ck-mlops --path=COPY``): an added repo."""
    add_repo(ctx, {"entry": REPO_NAME, "path": str(ck_copy)})
    ctx.forget_registry()
    return ck_copy


@contextlib.contextmanager
def home_context(home: Path) -> Iterator[Context]:
    """A Context on ``home`` for steps a CLI test does in process (recording stand-in envs)."""
    context = Context(Home(home), quiet=True, interactive=False)
    try:
        yield context
    finally:
        context.close()


def map_urls(home: Path, server) -> None:
    """Every http(s) URL goes to the loopback server, under /http/... and /https/..."""
    settings = home / "settings.json"
    data = json.loads(settings.read_text()) if settings.is_file() else {}
    data["url_map"] = {"https://": f"{server.url}/https/", "http://": f"{server.url}/http/"}
    settings.write_text(json.dumps(data))


def served_path(url: str) -> str:
    """Where the loopback server keeps the file for ``url`` (mapped as ``map_urls`` does; it serves unquoted paths)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}/{urllib.parse.unquote(rest)}"


def meta_of(root: Path, alias: str) -> dict:
    return json.loads((root / "package" / alias / ".cm" / "meta.json").read_text())


def default_variation(meta: dict) -> str | None:
    variations = meta.get("variations") or {}
    for name, spec in variations.items():
        if str((spec or {}).get("on_by_default", "")).lower() == "yes":
            return name
    return next(iter(variations), None)


def stand_in_envs(ctx, meta: dict) -> None:
    """Record an env for each of the package's deps (what a machine that has them would hold)."""
    for name, spec in (meta.get("deps") or {}).items():
        tags = [t for t in str(spec.get("tags") or "").replace(";", ",").split(",") if t]
        folder = ctx.home.root / "stand-ins" / name
        folder.mkdir(parents=True, exist_ok=True)
        record_env(ctx, soft=None, version="1.0", full_path=str(folder), env={"CK_ENV_STAND_IN_" + re.sub(r"\W", "_", name).upper(): str(folder)},
                   tags=tags, package=None, install_dir=str(folder), name=f"stand-in for {name}")


def record_compiler(ctx, tags: str) -> None:
    """The machine's C/C++ compiler as an env with CK's tags (what ``detect soft:compiler.gcc`` records)."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    assert gcc, "the tests need a C compiler on PATH"
    record_env(ctx, soft=None, version="9.0", full_path=gcc, tags=tags.split(","), package=None,
               env={"CK_CC": gcc, "CK_CXX": shutil.which("g++") or gcc, "CK_ENV_COMPILER_GCC": str(Path(gcc).parent.parent)},
               name="gcc")


def payload_for(alias: str, package: CkPackage) -> tuple[str, bytes, str | None]:
    """(file name, bytes to serve, path the installation must hold) for a download-family package."""
    env = package.linux_env()
    efp = package.end_full_path
    content = f"ckx test payload for {alias}\n".encode()
    if env.get("DOWNLOAD_FILE"):
        name, member = env["DOWNLOAD_FILE"], efp or "payload.txt"
        return name, _tar({member: content}, "gz"), member
    name = env["PACKAGE_NAME"]
    member = efp if efp and efp != "dummy" else "payload.txt"
    on = lambda key: str(env.get(key, "")).upper() == "YES"  # noqa: E731
    if on("PACKAGE_UNZIP"):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            zf.writestr(member, content)
        return name, buffer.getvalue(), member
    if on("PACKAGE_UNGZIP") and on("PACKAGE_UNTAR"):
        return name, _tar({member: content}, "gz"), member
    if on("PACKAGE_UNTAR"):
        return name, _tar({member: content}, ""), member
    if on("PACKAGE_UNXTAR"):
        return name, _tar({member: content}, "xz"), member
    if on("PACKAGE_UNGZIP"):
        return name, gzip.compress(content), name[:-3]
    output = re.search(r"(?:-O|--output-document)[ =](\S+)", env.get("PACKAGE_WGET_EXTRA", ""))
    return name, content, output.group(1) if output else name  # a plain download lands under its own name


def _tar(members: dict[str, bytes], compression: str, modes: dict[str, int] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}" if compression else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = (modes or {}).get(name, 0o644)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.org")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def bare_repo(root: Path, files: dict[str, str], *, tag: str | None = None, branch: str = "master") -> Path:
    """A bare git repo on disk holding ``files`` (and ``tag``); returns its path."""
    work = root.with_name(root.name + "-work")
    work.mkdir(parents=True)
    git(work, "init", "-q", "-b", branch)
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "source")
    if tag:
        git(work, "tag", tag)
    git(root.parent, "clone", "-q", "--bare", str(work), str(root))
    return root


def preimage(patch_text: str, strip: int = 1) -> dict[str, str]:
    """The original files a unified diff applies to: its context and removed lines, each hunk at its line."""
    files: dict[str, list[str]] = {}
    current: list[str] | None = None
    lines = patch_text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            old = line[4:].split("\t")[0].strip()
            new = lines[i + 1][4:].split("\t")[0].strip()
            name = new if old == "/dev/null" else old
            current = None if old == "/dev/null" else files.setdefault("/".join(name.split("/")[strip:]), [])
            i += 2
            continue
        match = re.match(r"@@ -(\d+)(?:,(\d+))? \+\d+(?:,\d+)? @@", line)
        if match and current is not None:
            start = int(match.group(1))
            while len(current) < start - 1:
                current.append(f"// filler line {len(current) + 1}")
            i += 1
            while i < len(lines) and not lines[i].startswith(("@@", "--- ", "diff ")):
                body = lines[i]
                if body.startswith((" ", "-")) or body == "":
                    current.append(body[1:] if body else "")
                elif body.startswith("\\"):
                    pass
                elif not body.startswith("+"):
                    break
                i += 1
            continue
        i += 1
    return {name: "\n".join(text) + "\n" for name, text in files.items() if text}


# --------------------------------------------------------------------------- the tiers


def test_install_tier_of_every_ck_mlops_package_is_fast_and_names_its_reason(ck_copy):
    repo = Repo(REPO_NAME, ck_copy, "ck")
    started = time.perf_counter()
    tiers = {}
    for entry in sorted((ck_copy / "package").iterdir()):
        if entry.name.startswith("."):
            continue
        meta = json.loads((entry / ".cm" / "meta.json").read_text())
        tiers[entry.name] = install_tier(meta, entry, repo)
    elapsed = time.perf_counter() - started
    assert len(tiers) == 558
    assert elapsed < 5.0, f"classifying 558 packages took {elapsed:.2f} s"
    assert {tier for tier, _ in tiers.values()} == {NATIVE, CK_SCRIPT, REFUSED}
    assert all(reason for _, reason in tiers.values())
    assert tiers["ml-model-mlperf-resnet50-onnx"] == (NATIVE, "fetches PACKAGE_URL/PACKAGE_NAME")
    assert tiers["lib-python-numpy"][0] == NATIVE and "pip-installs numpy" in tiers["lib-python-numpy"][1]
    assert tiers["lib-python-scipy"][0] == NATIVE  # its own install.sh is CK's Python-package script
    assert tiers["imagenet-2012-aux"][0] == NATIVE and "DOWNLOAD_URL" in tiers["imagenet-2012-aux"][1]
    assert tiers["mlperf-inference-source"] == (NATIVE, "clones PACKAGE_URL with git")  # PACKAGE_BUILD_TYPE=none builds nothing
    assert tiers["tool-cmake-src"] == (CK_SCRIPT, "download-and-install-package: brings scripts.linux/install.sh")
    assert tiers["tool-flac-1.3.2"][0] == CK_SCRIPT and "PACKAGE_BUILD_TYPE=configure" in tiers["tool-flac-1.3.2"][1]
    assert tiers["bench-sylt-master"][0] == CK_SCRIPT and "patch" in tiers["bench-sylt-master"][1]
    assert tiers["lib-viennacl-1.7.1-src"] == (CK_SCRIPT, "runs its own install.sh")
    assert tiers["python"] == (REFUSED, "runs CK's kernel API (custom.py setup), which ckx does not run")
    assert tiers["perl-strawberry-5.24.1.1-win"][0] == REFUSED
    assert "windows" in tiers["perl-strawberry-5.24.1.1-win"][1] or "custom.py" in tiers["perl-strawberry-5.24.1.1-win"][1]
    android = [name for name, (tier, reason) in tiers.items() if tier == REFUSED and "android" in reason]
    assert android, "packages only for Android are refused, saying so"


def test_ck_scripts_run_only_for_pulled_or_added_repos(tmp_path):
    assert ck_scripts_allowed(Repo("pulled", tmp_path, "ck", url="file:///x", origin="pulled"))[0] is True
    assert ck_scripts_allowed(Repo("added", tmp_path, "ck", origin="user")) == (
        True, f"repo added was added by the user from {tmp_path}")
    allowed, why = ck_scripts_allowed(Repo("unzipped", tmp_path, "ck", url="https://github.com/x/y", origin="unzipped"))
    assert allowed is False and "archive" in why
    assert ck_scripts_allowed(Repo("builtin", tmp_path, "ckx", builtin=True, origin="builtin"))[0] is False
    assert ck_scripts_allowed(Repo("local", tmp_path, "ckx", origin="local"))[0] is True
    # an entry an archive brought into the user's own repo carries its mark, and its scripts do not run
    marked = {"provenance": {"origin": "unzipped", "source": "ckr.zip"}}
    allowed, why = ck_scripts_allowed(Repo("local", tmp_path, "ckx", origin="local"), marked)
    assert allowed is False and "came from an archive" in why


# --------------------------------------------------------------------------- native tier


def download_family(root: Path) -> list[tuple[str, str | None]]:
    """(alias, variation) of every native package that downloads (PACKAGE_WGET or DOWNLOAD_URL)."""
    repo = Repo(REPO_NAME, root, "ck")
    chosen = []
    for entry in sorted((root / "package").iterdir()):
        if entry.name.startswith("."):
            continue
        meta = json.loads((entry / ".cm" / "meta.json").read_text())
        variation = default_variation(meta)
        tier, reason = install_tier(meta, entry, repo, variation)
        if tier == NATIVE and reason.startswith(("fetches", "downloads")):
            chosen.append((entry.name, variation))
    return chosen


@pytest.mark.slow
def test_every_native_download_package_installs_from_loopback_with_ck_names(ctx, ck_copy, http_server, request):
    family = download_family(ck_copy)
    assert len(family) >= 30 and ("ml-model-mlperf-resnet50-onnx", "v1.5-opset-8") in family
    served: dict[str, tuple[bytes, str | None]] = {}
    repo = Repo(REPO_NAME, ck_copy, "ck")
    for alias, variation in family:
        meta = meta_of(ck_copy, alias)
        package = CkPackage.load(meta, ck_copy / "package" / alias, repo, variation)
        name, data, member = payload_for(alias, package)
        env = package.linux_env()
        url = (env.get("DOWNLOAD_URL") or env["PACKAGE_URL"]).rstrip("/") + "/" + name
        if alias == "imagenet-2012-aux":  # its md5 is the real file's: give the copy the generated file's md5
            original = CK_MLOPS / "package" / alias / ".cm" / "meta.json"
            request.addfinalizer(lambda source=original, target=ck_copy / "package" / alias / ".cm" / "meta.json":
                                 target.write_bytes(source.read_bytes()))
            digest = hashlib.md5(data).hexdigest()
            meta["customize"]["install_env"]["DOWNLOAD_FILE_MD5"] = digest
            for spec in meta["variations"].values():
                spec["extra_env"]["DOWNLOAD_FILE_MD5"] = digest
            (ck_copy / "package" / alias / ".cm" / "meta.json").write_text(json.dumps(meta, indent=1))
        http_server.put(served_path(url), data)
        served[alias] = (data, member)
    add_repo(ctx, {"entry": REPO_NAME, "path": str(ck_copy)})
    ctx.forget_registry()
    map_urls(ctx.home.root, http_server)
    failures = []
    for alias, variation in family:
        stand_in_envs(ctx, meta_of(ck_copy, alias))
        try:
            result = install(ctx, alias=alias, variation=variation)
        except Exception as exc:  # collected so one run names every package that fails
            failures.append(f"{alias}: {type(exc).__name__}: {exc}")
            continue
        env, (data, member) = result.env, served[alias]
        assert result.status == "installed", alias
        install_dir = Path(env.install_dir)
        if member:
            assert (install_dir / member).is_file(), (alias, member)
        assert env.meta["ck_tier"] == NATIVE
        soft_prefix = env.env_prefix
        if soft_prefix:
            assert env.env[soft_prefix].startswith(str(install_dir)), alias
            assert env.env[f"{soft_prefix}_SET"] == "1"
        if alias == "imagenet-2012-aux":
            assert env.meta["verified_md5"] == hashlib.md5(data).hexdigest()
        else:
            assert env.meta["sha256"] == hashlib.sha256(data).hexdigest(), alias
    assert not failures, "\n".join(failures)
    # CK's names, as ck-mlops programs read them
    resnet = [e for e in find_envs(ctx, tags="ml-model,resnet50,onnx") if e.package == "ml-model-mlperf-resnet50-onnx"][0]
    root = Path(resnet.install_dir)
    assert resnet.soft == "model.onnx" and resnet.env_prefix == "CK_ENV_ONNX_MODEL"
    assert resnet.env["CK_ENV_ONNX_MODEL"] == str(root)
    assert resnet.env["CK_ENV_ONNX_MODEL_ONNX_FILEPATH"] == str(root / "resnet50_v1.onnx")
    assert resnet.env["CK_ENV_ONNX_MODEL_ONNX_FILENAME"] == "resnet50_v1.onnx"
    assert resnet.env["ML_MODEL_FILEPATH"] == str(root / "resnet50_v1.onnx")
    assert resnet.env["ML_MODEL_DATA_LAYOUT"] == "NCHW" and resnet.env["CK_ENV_ONNX_MODEL_IMAGE_HEIGHT"] == "224"
    assert resnet.full_path == str(root / "resnet50_v1.onnx")
    env_sh = (resnet.path / "env.sh").read_text()
    assert "CK_ENV_ONNX_MODEL_ONNX_FILEPATH" in env_sh


def test_ck_checksum_is_verified_and_a_mismatch_installs_nothing(ctx, ck_repo, http_server):
    map_urls(ctx.home.root, http_server)
    http_server.put("https/www.dropbox.com/s/92n2fyej3lzy3s3/caffe_ilsvrc12.tar.gz",
                    _tar({"imagenet_mean.binaryproto": b"not the real file"}, "gz"))
    with pytest.raises(ChecksumMismatch) as caught:
        install(ctx, alias="imagenet-2012-aux", variation="from.dividiti")
    assert "ee346d67141e476df9c1a3f813552503" in str(caught.value)
    assert not [p for p in ctx.home.tools.iterdir() if not p.name.startswith(".")] if ctx.home.tools.exists() else True


def test_native_git_package_clones_a_local_bare_repo_and_checks_out(ctx, ck_repo, tmp_path):
    remote = bare_repo(tmp_path / "inference.git", {"loadgen/README.md": "loadgen\n", "README.md": "inference\n"},
                       tag="r2.1")
    settings = ctx.home.root / "settings.json"
    settings.write_text(json.dumps({"url_map": {"https://github.com/mlcommons/inference": remote.as_uri()}}))
    result = install(ctx, alias="mlperf-inference-source", variation="r2.1")
    env = result.env
    root = Path(env.install_dir)
    assert (root / "inference" / "loadgen" / "README.md").read_text() == "loadgen\n"
    assert env.full_path == str(root / "inference" / "loadgen" / "README.md")
    assert env.version == "r2.1"
    assert any("cloned" in note and "at commit" in note for note in env.meta["notes"])
    assert env.meta["ck_tier"] == NATIVE
    again = install(ctx, alias="mlperf-inference-source", variation="r2.1")
    assert again.status == "already-installed" and again.env.uid == env.uid


def test_ck_script_timeout_stops_it_keeps_the_log_and_installs_nothing(ctx, ck_repo, http_server, monkeypatch):
    slow = _tar({"cmake-3.19.5/bootstrap": b"#!/bin/sh\necho bootstrapping slowly\nsleep 60\n"}, "gz",
                modes={"cmake-3.19.5/bootstrap": 0o755})
    map_urls(ctx.home.root, http_server)
    http_server.put("https/github.com/Kitware/CMake/releases/download/v3.19.5/cmake-3.19.5.tar.gz", slow)
    record_compiler(ctx, "compiler,lang-cpp")
    monkeypatch.setenv("CKX_CK_SCRIPT_TIMEOUT", "3")
    started = time.monotonic()
    with pytest.raises(CkxError) as caught:
        install(ctx, alias="tool-cmake-src", variation="v3.19.5")
    assert time.monotonic() - started < 40
    assert "did not finish within 3 s" in str(caught.value)
    logs = list((ctx.home.root / "logs").glob("ck-tool-cmake-src-*.log"))
    assert len(logs) == 1 and "bootstrapping slowly" in logs[0].read_text()
    assert [p.name for p in ctx.home.tools.iterdir()] == []  # no staging directory, no half installation
    assert not find_envs(ctx, tags="tool,cmake")


# --------------------------------------------------------------------------- Python packages


PYTHON_SAMPLE = ("numpy", "scipy", "requests", "defusedxml")


@pytest.mark.slow
def test_python_package_family_installs_from_local_wheels(ctx, ck_repo, tmp_path):
    wheels = tmp_path / "wheels"
    for name in PYTHON_SAMPLE:
        build_wheel(wheels, name, "1.0.0")
    build_wheel(wheels, "numpy", "1.18.5")
    detect_soft(ctx, "builtin:compiler.python", full_path=sys.executable)
    for name in PYTHON_SAMPLE:
        alias = f"lib-python-{name}"
        meta = meta_of(ck_repo, alias)
        result = install(ctx, alias=alias, variation=default_variation(meta), local_path=wheels)
        env = result.env
        root = Path(env.install_dir)
        assert (root / "build" / name / "__init__.py").is_file(), alias
        assert env.full_path == str(root / "build" / name / "__init__.py")
        assert env.env["PYTHONPATH"] == str(root / "build")
        assert env.meta["ck_tier"] == NATIVE
        assert env.env_prefix and env.env[env.env_prefix].startswith(str(root))
        probe = subprocess.run([sys.executable, "-c", f"import {name}; print({name}.__version__)"],
                               env=dict(os.environ, PYTHONPATH=env.env["PYTHONPATH"]), capture_output=True, text=True)
        assert probe.returncode == 0, probe.stderr
        expected = "1.18.5" if name == "numpy" else "1.0.0"  # lib-python-numpy's one variation pins 1.18.5
        assert probe.stdout.strip() == expected and env.version == expected


# --------------------------------------------------------------------------- CK scripts


def cmake_source() -> bytes:
    """A stand-in 'CMake source' tarball: ./bootstrap writes a Makefile whose build makes bin/cmake."""
    bootstrap = ("#!/bin/sh\n"
                 "echo \"$INSTALL_DIR\" > built-for\n"
                 "printf 'all:\\n\\tmkdir -p bin\\n\\tprintf \"#!/bin/sh\\\\necho cmake version 3.19.5\\\\n\" > bin/cmake\\n"
                 "\\tchmod 755 bin/cmake\\n' > Makefile\n")
    return _tar({"cmake-3.19.5/bootstrap": bootstrap.encode(), "cmake-3.19.5/README": b"stand-in\n"}, "gz",
                modes={"cmake-3.19.5/bootstrap": 0o755})


@pytest.mark.slow
def test_ck_script_source_build_tool_cmake_src(cli, ckx_home, ck_copy, http_server):
    assert cli("add", "repo:ck-mlops", f"--path={ck_copy}").returncode == 0
    map_urls(ckx_home, http_server)
    http_server.put("https/github.com/Kitware/CMake/releases/download/v3.19.5/cmake-3.19.5.tar.gz", cmake_source())
    with home_context(ckx_home) as ctx:
        record_compiler(ctx, "compiler,lang-cpp,lang-c,gcc")
    proc = cli("install", "package:tool-cmake-src", "--variation=v3.19.5")
    assert proc.returncode == 0, proc.stderr
    output = proc.stdout + proc.stderr
    assert "ck-script tier" in output and "running CK's scripts: repo ck-mlops was added by the user from" in output
    with home_context(ckx_home) as ctx:
        env = [e.summary() | {"meta": e.meta} for e in find_envs(ctx, tags="tool,cmake")][0]
    root = Path(env["install_dir"])
    cmake = root / "bin" / "cmake"
    assert os.path.islink(root / "bin") and Path(os.path.realpath(root / "bin")) == root / "cmake-3.19.5" / "bin"
    assert [p.name for p in ckx_home.joinpath("tools").iterdir() if p.is_symlink()] == []
    assert (root / "cmake-3.19.5" / "built-for").read_text().strip() == str(root)  # the script saw the final path
    assert subprocess.run([str(cmake)], capture_output=True, text=True).stdout.strip() == "cmake version 3.19.5"
    assert env["full_path"] == str(cmake)
    assert env["env"]["CK_ENV_TOOL_CMAKE"] == str(root) and env["env"]["CK_ENV_TOOL_CMAKE_BIN"] == str(root / "bin")
    log = (root / LOG_NAME).read_text()
    assert "Executing extra script" in log and "Untarring archive" in log  # the shared script, then the package's own
    assert list((ckx_home / "logs").glob("ck-tool-cmake-src-*.log"))
    assert env["version"] == "3.19.5"


def flac_source() -> bytes:
    """A stand-in autotools source: configure writes a Makefile whose install puts bin/flac under --prefix."""
    configure = ("#!/bin/sh\n"
                 "prefix=/usr/local\n"
                 "for a in \"$@\"; do case $a in --prefix=*) prefix=${a#--prefix=};; esac; done\n"
                 "src=$(dirname \"$0\")\n"
                 "printf 'all:\\n\\tcc -o flac %s/flac.c\\ninstall:\\n\\tmkdir -p %s/bin\\n\\tcp flac %s/bin/flac\\n' "
                 "\"$src\" \"$prefix\" \"$prefix\" > Makefile\n")
    program = '#include <stdio.h>\nint main(void) { puts("flac 1.3.2"); return 0; }\n'
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data, mode in (("flac-1.3.2/configure", configure.encode(), 0o755),
                                 ("flac-1.3.2/flac.c", program.encode(), 0o644)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return lzma.compress(buffer.getvalue(), format=lzma.FORMAT_XZ)


def test_ck_script_configure_build_tool_flac(ctx, ck_repo, http_server):
    map_urls(ctx.home.root, http_server)
    http_server.put("https/ftp.osuosl.org/pub/xiph/releases/flac/flac-1.3.2.tar.xz", flac_source())
    record_compiler(ctx, "compiler,lang-c,gcc")
    result = install(ctx, alias="tool-flac-1.3.2")
    env = result.env
    flac = Path(env.install_dir) / "install" / "bin" / "flac"
    assert env.full_path == str(flac)
    assert subprocess.run([str(flac)], capture_output=True, text=True).stdout.strip() == "flac 1.3.2"
    assert env.meta["ck_tier"] == CK_SCRIPT
    assert env.meta["sha256"] == hashlib.sha256(flac_source()).hexdigest()  # no CK checksum: what ckx fetched
    assert "Executing configure" in (Path(env.install_dir) / LOG_NAME).read_text()


def test_ck_script_git_clone_and_patch_bench_sylt(ctx, ck_repo, tmp_path):
    patch = (ck_repo / "package" / "bench-sylt-master" / "patch.linux" / "added_cli_params.patch").read_text()
    files = preimage(patch)
    files.setdefault("trace_generator/trace_generator.h", "// trace generator\n")
    remote = bare_repo(tmp_path / "inference.git", files)
    (ctx.home.root / "settings.json").write_text(json.dumps({"url_map": {"https://github.com/mlperf/inference": remote.as_uri()}}))
    result = install(ctx, alias="bench-sylt-master")
    root = Path(result.env.install_dir)
    log = (root / LOG_NAME).read_text()
    assert "[Patcher] Applying patch" in log
    added = [line[1:] for line in patch.splitlines() if line.startswith("+") and not line.startswith("+++")]
    patched = "".join((root / "src" / name).read_text() for name in files)
    assert added and all(line in patched for line in added if line.strip())
    assert result.env.full_path == str(root / "src" / "trace_generator" / "trace_generator.h")


def test_ck_script_own_install_sh_git_and_patch_viennacl(ctx, ck_repo, tmp_path):
    patch = (ck_repo / "package" / "lib-viennacl-1.7.1-src" / "181.patch").read_text()
    files = preimage(patch)
    files["viennacl/version.hpp"] = "#define VIENNACL_VERSION 1.7.1\n"
    remote = bare_repo(tmp_path / "viennacl.git", files, tag="release-1.7.1")
    (ctx.home.root / "settings.json").write_text(json.dumps({"url_map": {"https://github.com/viennacl/viennacl-dev": remote.as_uri()}}))
    result = install(ctx, alias="lib-viennacl-1.7.1-src")
    root = Path(result.env.install_dir)
    assert "if (ptr && !(flags & CL_MEM_USE_HOST_PTR))" in (root / "src" / "viennacl" / "ocl" / "context.hpp").read_text()
    assert result.env.full_path == str(root / "src" / "viennacl" / "version.hpp")
    assert result.env.meta["ck_tier"] == CK_SCRIPT


def test_offline_refuses_a_ck_script_that_fetches_by_itself(ctx, ck_repo):
    with pytest.raises(DownloadError) as caught:
        install(ctx, alias="lib-viennacl-1.7.1-src", offline=True)
    assert "offline" in str(caught.value) and "install.sh" in str(caught.value) and "git" in str(caught.value)
    assert not ctx.home.tools.exists() or [p.name for p in ctx.home.tools.iterdir()] == []
    assert not list((ctx.home.root / "logs").glob("*.log")) if (ctx.home.root / "logs").exists() else True


def test_ck_script_zip_patch_and_setup_py_tool_scons(ctx, ck_repo, http_server):
    patch = (ck_repo / "package" / "tool-scons-3.0.0" / "patch.linux" / "patch").read_text()
    files = {f"scons-3.0.0/{name}": text for name, text in preimage(patch).items()}
    files["scons-3.0.0/setup.py"] = ("import os, sys\n"
                                     "home = [a.split('=', 1)[1] for a in sys.argv if a.startswith('--home=')][0]\n"
                                     "os.makedirs(os.path.join(home, 'bin'), exist_ok=True)\n"
                                     "open(os.path.join(home, 'bin', 'scons'), 'w').write('#!/bin/sh\\necho scons 3.0.0\\n')\n")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    map_urls(ctx.home.root, http_server)
    http_server.put("https/downloads.sourceforge.net/project/scons/scons/3.0.0/scons-3.0.0.zip", buffer.getvalue())
    detect_soft(ctx, "builtin:compiler.python", full_path=sys.executable)
    result = install(ctx, alias="tool-scons-3.0.0")
    root = Path(result.env.install_dir)
    assert (root / "install" / "bin" / "scons").is_file()
    assert "# from __future__ import print_function" in (root / "scons-3.0.0" / "engine" / "SCons" / "Script" / "SConscript.py").read_text()


def test_ck_script_from_an_unzipped_repo_is_refused(ctx, ck_copy, tmp_path):
    archive = tmp_path / "ckr-from-archive.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for part in (".ckr.json", ".cm", "package/.cm", "package/tool-cmake-src", "script/.cm",
                     "script/download-and-install-package", "soft/.cm", "soft/tool.cmake"):
            source = ck_copy / part
            for path in ([source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())):
                zf.write(path, path.relative_to(ck_copy).as_posix())
    result = access({"action": "unzip", "module": "repo", "entry": "from-archive", "zip": str(archive)})
    assert result["return"] == 0, result
    ctx.forget_registry()
    assert ctx.registry.get("from-archive").origin == "unzipped"
    record_compiler(ctx, "compiler,lang-cpp")
    with pytest.raises(UsageError) as caught:
        install(ctx, alias="tool-cmake-src", variation="v3.19.5")
    assert "came from an archive" in str(caught.value) and "CK's scripts" in str(caught.value)
    assert not ctx.home.tools.exists() or not list(ctx.home.tools.iterdir())


def test_refused_package_names_its_reason(cli, ckx_home, ck_copy):
    assert cli("add", "repo:ck-mlops", f"--path={ck_copy}").returncode == 0
    proc = cli("install", "package:python", "--variation=v3.9.4")
    assert proc.returncode != 0
    assert "runs CK's kernel API (custom.py setup), which ckx does not run" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = cli("install", "package:perl-strawberry-5.24.1.1-win")
    assert proc.returncode != 0 and "ckx does not install CK package" in proc.stderr


def test_search_package_installable_lists_tiers(cli_json, cli, ck_copy):
    assert cli("add", "repo:ck-mlops", f"--path={ck_copy}").returncode == 0
    code, data = cli_json("search", "package", "--installable")
    assert code == 0
    tiers = {e["cid"]: e["tier"] for e in data["entries"]}
    assert tiers["ck-mlops:package:ml-model-mlperf-resnet50-onnx"] == NATIVE
    assert tiers["ck-mlops:package:tool-cmake-src"] == CK_SCRIPT
    assert "ck-mlops:package:python" not in tiers and data["refused"] >= 150
    assert tiers["builtin:package:model-resnet50-mlperf-onnx"] == NATIVE
    text = cli("search", "package", "--installable", "--tags=cmake").stdout
    assert "tool-cmake-src" in text and "ck-script" in text and "tool-cmake-prebuilt" not in text
    code, plain = cli_json("search", "package", "--tags=cmake")
    assert any(e["cid"].endswith("tool-cmake-prebuilt") for e in plain["entries"])  # without --installable: all


@pytest.mark.slow
def test_pulled_remote_installs_a_ck_script_package_and_says_why(cli, ckx_home, ck_copy, tmp_path, http_server):
    remote = tmp_path / "remote"
    shutil.copytree(ck_copy, remote, symlinks=True)
    git(remote, "init", "-q", "-b", "master")
    git(remote, "add", "-A")
    git(remote, "commit", "-q", "-m", "ck-mlops")
    proc = cli("pull", "repo:ck-mlops", f"--url={remote.as_uri()}", "--no_deps")
    assert proc.returncode == 0, proc.stderr
    map_urls(ckx_home, http_server)
    http_server.put("https/github.com/Kitware/CMake/releases/download/v3.19.5/cmake-3.19.5.tar.gz", cmake_source())
    with home_context(ckx_home) as ctx:
        record_compiler(ctx, "compiler,lang-cpp")
    proc = cli("install", "package:tool-cmake-src", "--variation=v3.19.5")
    assert proc.returncode == 0, proc.stderr
    assert "running CK's scripts: repo ck-mlops was pulled by the user" in proc.stdout + proc.stderr


def test_meta_error_type_for_refusal(ctx, ck_repo):
    with pytest.raises(MetaError) as caught:
        install(ctx, alias="python", variation="v3.9.4")
    assert "custom.py" in str(caught.value)


def test_compat_table_is_generated_from_the_repo_and_up_to_date(tmp_path):
    script = ROOT / "scripts" / "ck_compat_table.py"
    proc = subprocess.run([sys.executable, str(script), "--check", f"--repo={CK_MLOPS}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr  # docs/ck-compatibility.md is what the script writes
    output = tmp_path / "compat.md"
    proc = subprocess.run([sys.executable, str(script), f"--repo={CK_MLOPS}", f"--output={output}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = output.read_text()
    total = re.search(r"\| \*\*all\*\* \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|", text)
    assert total and int(total.group(1)) == 558 == sum(int(total.group(i)) for i in (2, 3, 4))
    row = re.search(r"\| `lib-python-\*` \| (\d+) \| (\d+) \|", text)
    assert row and int(row.group(2)) >= 30
    assert text.rstrip().splitlines()[-3] == "## Guide lines"
