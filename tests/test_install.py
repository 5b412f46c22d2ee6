"""Tests for ckx.software.install: packages in a temporary native repo, served by a real loopback HTTP server."""
from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import re
import secrets
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
from httpserver import serve, unused_url
from wheels import build_wheel

from ckx.core.report import Reporter

from ckx.store.context import Context
from ckx.core.errors import (Ambiguous, ChecksumMismatch, CkxError, DownloadError, MetaError, NotFound,
                        ResolutionError, UnsafeArchive)
from ckx.core.home import Home
from ckx.software.install import HOOK_PARAMETERS, load_hook
from ckx.software.packages import find_candidates
from ckx.software.resolve import install, install_package

ROOT = Path(__file__).resolve().parent.parent
DATA = bytes(range(256)) * 600  # 153,600 bytes
MD5 = hashlib.md5(DATA).hexdigest()
SHA256 = hashlib.sha256(DATA).hexdigest()
TEST_TAG = "ckxtest"
GOOD_HOOK = textwrap.dedent('''\
    """A test hook."""
    from __future__ import annotations

    import pathlib as _pathlib


    def install(*, install_dir, package_dir, meta, variation, env, python, downloaded, info):
        """Write a marker and report what it was given."""
        (install_dir / "made.txt").write_text(f"{variation} {downloaded is not None} {env.get('CKXTEST_DEP', '')}")
        info("hook ran")
        return {"DEMO_MADE": "{install_dir}/made.txt", "DEMO_COUNT": 3}
''')


# ---------------------------------------------------------------------------------------------- helpers


class PackageRepo:
    """A native repo registered in the test's CKX_HOME, to which tests add package entries."""

    def __init__(self, ctx: Context, path: Path) -> None:
        self.ctx = ctx
        self.path = path

    def add(self, alias: str, *, source: dict, tags: list[str] | None = None, hook: str | None = None,
            **meta: object) -> Path:
        entry = self.path / "packages" / alias
        entry.mkdir(parents=True)
        full = {"alias": alias, "uid": secrets.token_hex(8), "schema_version": 1,
                "tags": [TEST_TAG, alias] + list(tags or []), "soft": "test.thing", "source": source, **meta}
        full = {key: value for key, value in full.items() if value is not None}
        (entry / "meta.json").write_text(json.dumps(full, indent=1))
        if hook is not None:
            (entry / "install.py").write_text(hook)
        self.ctx.index.refresh(["package"], force=True)
        return entry


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory):
    """A loopback HTTP server over a fresh directory."""
    with serve(tmp_path_factory.mktemp("www")) as loopback:
        yield loopback


@pytest.fixture
def repo(ctx: Context, tmp_path: Path) -> PackageRepo:
    from ckx.store.repo_actions import add_repo

    path = tmp_path / "pkgrepo"
    add_repo(ctx, {"entry": "testpkgs", "path": str(path)})
    return PackageRepo(ctx, path)


def download(url: str | list[str], **extra: object) -> dict:
    urls = [url] if isinstance(url, str) else url
    return {"kind": "download", "urls": urls, "filename": "data.bin", "md5": MD5, **extra}


def leftovers(ckx_home: Path) -> list[str]:
    """Everything in the tools directory (staging directories included)."""
    tools = ckx_home / "tools"
    return sorted(p.name for p in tools.iterdir()) if tools.is_dir() else []


def env_metas(ckx_home: Path) -> list[dict]:
    """The env records on disk (not through the index, which could be stale)."""
    envs = ckx_home / "repos" / "local" / "envs"
    if not envs.is_dir():
        return []
    return [json.loads((d / "meta.json").read_text()) for d in sorted(envs.iterdir())
            if (d / "meta.json").is_file()]


def package_envs(ckx_home: Path, alias: str) -> list[dict]:
    return [m for m in env_metas(ckx_home) if m.get("package") == alias]


def assert_nothing_installed(ckx_home: Path) -> None:
    assert leftovers(ckx_home) == []
    assert [m for m in env_metas(ckx_home) if TEST_TAG in m.get("tags", [])] == []


def cli_env(ckx_home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["CKX_HOME"] = str(ckx_home)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def link_member(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


class ChoosingReporter(Reporter):
    """A reporter that answers prompts with a fixed choice and records the options it was shown."""

    def __init__(self, answer: int | None) -> None:
        super().__init__()
        self.answer = answer
        self.asked: list[list[str]] = []

    def choose(self, question: str, options, default=None):
        self.asked.append(list(options))
        return self.answer


# ---------------------------------------------------------------------------------------------- downloads


def test_download_installs_moves_into_tools_and_records_env(ctx, repo, server, ckx_home):
    url = server.put("f/data.bin", DATA)
    repo.add("dl", source=download(url), version="1.0", env={"DL_FILE": "{install_dir}/data.bin"},
             env_prefix="CK_ENV_DL")
    result = install(ctx, alias="dl")
    assert result.status == "installed"
    env = result.env
    install_dir = Path(env.install_dir)
    assert install_dir.parent == ckx_home / "tools"
    assert install_dir.name.startswith("dl-1.0-")
    assert (install_dir / "data.bin").read_bytes() == DATA
    assert env.env["DL_FILE"] == f"{install_dir}/data.bin"
    assert env.env["CK_ENV_DL_SET"] == "1"
    assert env.full_path == str(install_dir / "data.bin")
    assert env.package == "dl" and env.version == "1.0"
    assert TEST_TAG in env.tags and "v1.0" in env.tags
    assert leftovers(ckx_home) == [install_dir.name]  # no staging directory left behind
    assert "{install_dir}" not in (Path(env.path) / "env.sh").read_text()


def test_cut_download_resumes_with_range_and_verifies(ctx, repo, server, ckx_home):
    url = server.put("f/data.bin", DATA)
    server.behave("/f/data.bin", cut=1)
    repo.add("cut", source=download(url))
    env = install_package(ctx, alias="cut")
    assert (Path(env.install_dir) / "data.bin").read_bytes() == DATA
    requests = server.requests_for("/f/data.bin")
    assert len(requests) == 2
    assert requests[0].range is None
    assert requests[1].range == f"bytes={len(DATA) // 2}-"


def test_network_failure_keeps_part_and_next_install_resumes(ctx, repo, server, ckx_home):
    url = server.put("f/data.bin", DATA)
    server.behave("/f/data.bin", cut=100)
    repo.add("resume", source=download(url))
    with pytest.raises(DownloadError) as info:
        install(ctx, alias="resume")
    assert "--local_path" in (info.value.hint or "")
    assert_nothing_installed(ckx_home)
    parts = list((ckx_home / "cache" / "downloads").rglob("*.part"))
    assert len(parts) == 1
    kept = parts[0].stat().st_size
    assert 0 < kept < len(DATA)
    server.behave("/f/data.bin")  # the network is back
    server.clear_log()
    env = install_package(ctx, alias="resume")
    assert (Path(env.install_dir) / "data.bin").read_bytes() == DATA
    assert [r.range for r in server.requests_for("/f/data.bin")] == [f"bytes={kept}-"]
    assert not list((ckx_home / "cache" / "downloads").rglob("*.part"))


def test_wrong_checksum_leaves_no_env_no_tools_dir_and_no_part(ctx, repo, server, ckx_home):
    bad = b"not the data" * 100
    url = server.put("f/data.bin", bad)
    repo.add("bad", source=download(url))
    with pytest.raises(ChecksumMismatch) as info:
        install(ctx, alias="bad")
    error = info.value
    assert error.exit_code == 5
    assert MD5 in str(error) and hashlib.md5(bad).hexdigest() in str(error)
    assert "--local_path" in (error.hint or "")
    assert_nothing_installed(ckx_home)
    assert not list((ckx_home / "cache" / "downloads").rglob("*.part"))
    assert not list((ckx_home / "cache" / "downloads").rglob("data.bin"))


def test_wrong_checksum_through_the_cli_exits_5_with_both_digests(cli, repo, server, ckx_home):
    bad = b"garbage" * 1000
    url = server.put("f/data.bin", bad)
    repo.add("badcli", source=download(url))
    proc = cli("install", "package:badcli", "--quiet")
    assert proc.returncode == 5, proc.stderr
    assert MD5 in proc.stderr and hashlib.md5(bad).hexdigest() in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") or "\nerror: " in proc.stderr
    assert_nothing_installed(ckx_home)


def test_404_on_first_mirror_falls_through_to_the_next(ctx, repo, server):
    good = server.put("mirror2/data.bin", DATA)
    missing = server.url_for("mirror1/data.bin")
    repo.add("mirrors", source=download([missing, good]))
    env = install_package(ctx, alias="mirrors")
    assert (Path(env.install_dir) / "data.bin").read_bytes() == DATA
    assert [r.status for r in server.requests_for("/mirror1/data.bin")] == [404]
    assert [r.status for r in server.requests_for("/mirror2/data.bin")] == [200]


def test_sha256_is_verified_too(ctx, repo, server, ckx_home):
    url = server.put("f/data.bin", DATA)
    repo.add("sha", source={"kind": "download", "urls": [url], "filename": "data.bin", "sha256": "0" * 64})
    with pytest.raises(ChecksumMismatch) as info:
        install(ctx, alias="sha")
    assert SHA256 in str(info.value) and "sha256" in str(info.value)
    assert_nothing_installed(ckx_home)


def test_every_mirror_failing_names_local_path_and_the_embedded_default(ctx, repo, ckx_home):
    repo.add("net", source=download([unused_url("a/data.bin"), unused_url("b/data.bin")]))
    repo.add("embedded", source={"kind": "hook"}, hook=GOOD_HOOK, embedded_default=True, offline=True)
    with pytest.raises(DownloadError) as info:
        install(ctx, alias="net")
    hint = info.value.hint or ""
    assert "--local_path=FILE" in hint
    assert "ckx install package:embedded" in hint and "--offline" in hint
    assert len(info.value.attempts) == 2
    assert_nothing_installed(ckx_home)


def test_offline_never_touches_the_network(ctx, repo, server, ckx_home):
    url = server.put("f/data.bin", DATA)
    repo.add("off", source=download(url))
    with pytest.raises(DownloadError):
        install(ctx, alias="off", offline=True)
    assert server.requests == []
    assert_nothing_installed(ckx_home)


def test_unpack_with_strip_components(ctx, repo, server):
    archive = tar_bytes([file_member("top/a/one.txt", b"1"), file_member("top/two.txt", b"2")])
    url = server.put("f/pkg.tar.gz", archive)
    repo.add("tgz", source={"kind": "download", "urls": [url], "filename": "pkg.tar.gz",
                            "md5": hashlib.md5(archive).hexdigest(), "unpack": True, "strip_components": 1})
    env = install_package(ctx, alias="tgz")
    install_dir = Path(env.install_dir)
    assert (install_dir / "a" / "one.txt").read_text() == "1"
    assert (install_dir / "two.txt").read_text() == "2"
    assert env.full_path == str(install_dir)


@pytest.mark.parametrize("members", [
    [file_member("ok.txt", b"ok"), file_member("../evil", b"x")],
    [file_member("/tmp/ckx-absolute-evil", b"x")],
    [link_member("escape", "../../../../etc"), file_member("ok.txt", b"ok")],
], ids=["dotdot", "absolute", "link-out"])
def test_unsafe_archive_is_refused_with_nothing_extracted(ctx, repo, server, ckx_home, members):
    archive = tar_bytes(members)
    url = server.put("f/evil.tar.gz", archive)
    repo.add("evil", source={"kind": "download", "urls": [url], "filename": "evil.tar.gz",
                             "md5": hashlib.md5(archive).hexdigest(), "unpack": True})
    with pytest.raises(UnsafeArchive) as info:
        install(ctx, alias="evil")
    assert info.value.exit_code == 5
    assert_nothing_installed(ckx_home)
    assert not [p for p in (ckx_home / "cache" / "downloads").rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert not (ckx_home / "evil").exists()
    assert not Path("/tmp/ckx-absolute-evil").exists()


def test_unsafe_archive_through_the_cli_exits_5(cli, repo, server, ckx_home):
    archive = tar_bytes([file_member("../evil", b"x")])
    url = server.put("f/evil.tar.gz", archive)
    repo.add("evilcli", source={"kind": "download", "urls": [url], "filename": "evil.tar.gz",
                                "md5": hashlib.md5(archive).hexdigest(), "unpack": True})
    proc = cli("install", "package:evilcli", "--quiet")
    assert proc.returncode == 5, proc.stderr
    assert "'..'" in proc.stderr and "Traceback" not in proc.stderr
    assert_nothing_installed(ckx_home)


# ---------------------------------------------------------------------------------------------- --local_path


def test_local_path_verifies_and_installs_without_network(ctx, repo, tmp_path, ckx_home):
    local = tmp_path / "downloaded-elsewhere.bin"
    local.write_bytes(DATA)
    repo.add("airgap", source=download(unused_url("f/data.bin")))
    result = install(ctx, alias="airgap", local_path=local)
    assert result.status == "installed"
    assert (Path(result.env.install_dir) / "data.bin").read_bytes() == DATA
    assert local.read_bytes() == DATA  # the user's file is untouched


def test_local_path_with_a_wrong_file_is_refused(ctx, repo, tmp_path, ckx_home):
    local = tmp_path / "wrong.bin"
    local.write_bytes(b"wrong" * 10)
    repo.add("airgapbad", source=download(unused_url("f/data.bin")))
    with pytest.raises(ChecksumMismatch) as info:
        install(ctx, alias="airgapbad", local_path=local)
    assert str(local) in str(info.value) and MD5 in str(info.value)
    assert_nothing_installed(ckx_home)


def test_local_path_that_does_not_exist_is_not_found(cli, repo, tmp_path, ckx_home):
    repo.add("airgapmissing", source=download(unused_url("f/data.bin")))
    proc = cli("install", "package:airgapmissing", f"--local_path={tmp_path / 'nope.bin'}", "--quiet")
    assert proc.returncode == 3, proc.stderr
    assert "nope.bin" in proc.stderr
    assert_nothing_installed(ckx_home)


# ---------------------------------------------------------------------------------------------- hooks


def test_hook_package_runs_its_hook_and_substitutes_install_dir(ctx, repo, ckx_home):
    repo.add("hooked", source={"kind": "hook"}, hook=GOOD_HOOK, env={"DEMO_ROOT": "{install_dir}"})
    result = install(ctx, alias="hooked")
    install_dir = Path(result.env.install_dir)
    assert (install_dir / "made.txt").read_text() == "None False "
    assert result.env.env["DEMO_MADE"] == f"{install_dir}/made.txt"
    assert result.env.env["DEMO_COUNT"] == "3"
    assert result.env.env["DEMO_ROOT"] == str(install_dir)
    assert "hook ran" in ctx.reporter.messages


def test_hook_after_download_gets_the_downloaded_file(ctx, repo, server):
    url = server.put("f/data.bin", DATA)
    repo.add("dlhook", source=download(url), hook=GOOD_HOOK)
    env = install_package(ctx, alias="dlhook")
    assert (Path(env.install_dir) / "made.txt").read_text() == "None True "
    assert (Path(env.install_dir) / "data.bin").read_bytes() == DATA


def test_exception_in_hook_leaves_nothing_behind(ctx, repo, ckx_home):
    hook = textwrap.dedent('''\
        def install(*, install_dir, package_dir, meta, variation, env, python, downloaded, info):
            (install_dir / "half.bin").write_bytes(b"x" * 1000)
            raise RuntimeError("disk on fire")
    ''')
    repo.add("crash", source={"kind": "hook"}, hook=hook)
    with pytest.raises(CkxError) as info:
        install(ctx, alias="crash")
    assert "disk on fire" in str(info.value) and "install.py" in str(info.value)
    assert_nothing_installed(ckx_home)


def test_exception_in_hook_through_the_cli_has_no_traceback(cli, repo, ckx_home):
    hook = textwrap.dedent('''\
        def install(*, install_dir, package_dir, meta, variation, env, python, downloaded, info):
            raise ValueError("bad value inside the hook")
    ''')
    repo.add("crashcli", source={"kind": "hook"}, hook=hook)
    proc = cli("install", "package:crashcli", "--quiet")
    assert proc.returncode == 1
    assert "bad value inside the hook" in proc.stderr and "Traceback" not in proc.stderr
    assert_nothing_installed(ckx_home)


def test_hook_raising_a_ckx_error_keeps_its_exit_code(cli, repo, ckx_home):
    hook = textwrap.dedent('''\
        from ckx.core.errors import IntegrityError as _IntegrityError


        def install(*, install_dir, package_dir, meta, variation, env, python, downloaded, info):
            raise _IntegrityError("the generated file does not verify")
    ''')
    repo.add("integrity", source={"kind": "hook"}, hook=hook)
    proc = cli("install", "package:integrity", "--quiet")
    assert proc.returncode == 5
    assert "does not verify" in proc.stderr
    assert_nothing_installed(ckx_home)


@pytest.mark.parametrize("hook, complaint", [
    (GOOD_HOOK + "\n\ndef helper():\n    pass\n", "helper"),
    (GOOD_HOOK.replace("import pathlib as _pathlib", "import pathlib"), "pathlib"),
    ("def install(*, instal_dir, info):\n    pass\n", "install() asks for 'instal_dir'"),
    ("def install(install_dir, package_dir, meta, variation, env, python, downloaded, info):\n    pass\n",
     "keyword-only"),
    ("def install(*, install_dir, package_dir, meta, variation, env, python, downloaded, info, extra):\n    pass\n",
     "asks for 'extra'"),
    ("def instal(*, install_dir):\n    pass\n", "unknown public function 'instal' (did you mean 'install'?)"),
    ("install = 3\n", "no function"),
    ("import nonexistent_module_for_ckx_tests\n", "fails to load"),
], ids=["extra-function", "public-import", "typo-parameter", "positional", "unknown-parameter", "typo-function",
        "not-a-function", "import-error"])
def test_invalid_hooks_are_refused_naming_the_file(ctx, repo, ckx_home, hook, complaint):
    entry = repo.add("badhook", source={"kind": "hook"}, hook=hook)
    with pytest.raises(MetaError) as info:
        load_hook(entry / "install.py")
    assert str(entry / "install.py") in str(info.value)
    assert complaint in str(info.value)
    with pytest.raises(MetaError):
        install(ctx, alias="badhook")
    assert_nothing_installed(ckx_home)


def _documented_hook_parameters() -> list[str]:
    """The parameters of ``def install(*, ...)`` in docs/software.md's section on the install hook."""
    text = (ROOT / "docs" / "software.md").read_text(encoding="utf-8")
    section = text[text.index("### The install hook"):]
    signature = section[section.index("def install(*,") + len("def install(*,"):section.index(") ->")]
    return [part.split(":")[0].strip() for part in re.split(r",(?![^\[]*\])", signature) if part.strip()]


def test_hook_contract_parameters_match_the_documented_signature(ctx, repo):
    documented = _documented_hook_parameters()
    assert set(documented) == set(HOOK_PARAMETERS)
    # A hook declaring every documented parameter is accepted and receives each of them, with its documented type.
    hook = textwrap.dedent(f'''\
        import json as _json


        def install(*, {", ".join(documented)}):
            got = {{name: type(value).__name__ for name, value in locals().items()}}
            (install_dir / "got.json").write_text(_json.dumps(got))
    ''')
    repo.add("allparams", source={"kind": "hook"}, hook=hook)
    got = json.loads((Path(install(ctx, alias="allparams").env.install_dir) / "got.json").read_text())
    assert sorted(got) == sorted(documented)
    assert got["install_dir"] == got["package_dir"] == "PosixPath" and got["meta"] == got["env"] == "dict"
    assert got["variation"] == got["downloaded"] == "NoneType" and got["python"] == "str" and got["info"] == "method"


def test_a_hook_declares_only_the_parameters_it_uses(ctx, repo):
    hook = "def install(*, install_dir):\n    (install_dir / 'only.txt').write_text('x')\n"
    repo.add("fewparams", source={"kind": "hook"}, hook=hook)
    assert (Path(install(ctx, alias="fewparams").env.install_dir) / "only.txt").read_text() == "x"
    every = "def install(**offered):\n    (offered['install_dir'] / 'n.txt').write_text(str(len(offered)))\n"
    repo.add("kwparams", source={"kind": "hook"}, hook=every)
    assert (Path(install(ctx, alias="kwparams").env.install_dir) / "n.txt").read_text() == str(len(HOOK_PARAMETERS))


def test_hook_returning_a_bad_value_is_an_error(ctx, repo, ckx_home):
    hook = GOOD_HOOK.replace('return {"DEMO_MADE": "{install_dir}/made.txt", "DEMO_COUNT": 3}', "return ['x']")
    repo.add("badreturn", source={"kind": "hook"}, hook=hook)
    with pytest.raises(MetaError, match="returned list"):
        install(ctx, alias="badreturn")
    assert_nothing_installed(ckx_home)


def test_hook_source_without_install_py_is_a_meta_error(ctx, repo, ckx_home):
    repo.add("nohook", source={"kind": "hook"})
    with pytest.raises(MetaError, match="install.py"):
        install(ctx, alias="nohook")
    assert_nothing_installed(ckx_home)


def test_package_without_a_source_is_a_meta_error(ctx, repo, ckx_home):
    repo.add("nosource", source={"kind": "conjure"})
    with pytest.raises(MetaError, match="source"):
        install(ctx, alias="nosource")
    assert_nothing_installed(ckx_home)


def test_package_deps_are_resolved_installed_and_given_to_the_hook(ctx, repo, ckx_home):
    repo.add("parent-pkg", source={"kind": "hook"}, hook=GOOD_HOOK, env={"CKXTEST_DEP": "{install_dir}"})
    repo.add("child-pkg", source={"kind": "hook"}, hook=GOOD_HOOK,
             deps={"parent": {"tags": f"{TEST_TAG},parent-pkg", "sort": 10}})
    child = install(ctx, alias="child-pkg")
    parents = package_envs(ckx_home, "parent-pkg")
    assert len(parents) == 1
    parent_dir = parents[0]["install_dir"]
    assert child.env.deps == {"parent": parents[0]["uid"]}
    assert (Path(child.env.install_dir) / "made.txt").read_text() == f"None False {parent_dir}"


def test_a_dependency_cycle_is_a_resolution_error(cli, repo, ckx_home):
    repo.add("cycle-a", source={"kind": "hook"}, hook=GOOD_HOOK, deps={"b": {"tags": f"{TEST_TAG},cycle-b"}})
    repo.add("cycle-b", source={"kind": "hook"}, hook=GOOD_HOOK, deps={"a": {"tags": f"{TEST_TAG},cycle-a"}})
    proc = cli("install", "package:cycle-a", "--quiet")
    assert proc.returncode == 4, proc.stderr
    assert "cycle" in proc.stderr and "Traceback" not in proc.stderr
    assert_nothing_installed(ckx_home)


def test_a_package_that_depends_on_itself_is_a_cycle_not_a_deadlock(ctx, repo, ckx_home):
    repo.add("selfish", source={"kind": "hook"}, hook=GOOD_HOOK, deps={"me": {"tags": f"{TEST_TAG},selfish"}})
    with pytest.raises(ResolutionError, match="cycle"):
        install(ctx, alias="selfish")
    assert_nothing_installed(ckx_home)


def test_a_failing_dependency_leaves_nothing_of_the_dependent(ctx, repo, ckx_home):
    crash = "def install(*, install_dir, package_dir, meta, variation, env, python, downloaded, info):\n    1 / 0\n"
    repo.add("broken-dep", source={"kind": "hook"}, hook=crash)
    repo.add("needs-broken", source={"kind": "hook"}, hook=GOOD_HOOK,
             deps={"dep": {"tags": f"{TEST_TAG},broken-dep"}})
    with pytest.raises(CkxError, match="ZeroDivisionError"):
        install(ctx, alias="needs-broken")
    assert_nothing_installed(ckx_home)


def test_a_package_meta_that_fails_its_schema_is_refused_naming_the_field(ctx, repo, ckx_home):
    entry = repo.add("typo", source={"kind": "download", "urls": ["http://127.0.0.1:9/x"], "md5": "not-hex"})
    with pytest.raises(MetaError) as info:
        install(ctx, alias="typo")
    assert str(entry / "meta.json") in str(info.value) and "source.md5" in str(info.value)
    assert_nothing_installed(ckx_home)


# ---------------------------------------------------------------------------------------------- twice, force, locks


def test_installing_twice_is_a_noop_that_says_so(ctx, repo, server, ckx_home):
    url = server.put("f/data.bin", DATA)
    repo.add("twice", source=download(url))
    first = install(ctx, alias="twice")
    server.clear_log()
    second = install(ctx, alias="twice")
    assert second.status == "already-installed"
    assert second.env.uid == first.env.uid
    assert any("already installed" in m for m in ctx.reporter.messages)
    assert server.requests == []
    assert len(package_envs(ckx_home, "twice")) == 1
    assert len(leftovers(ckx_home)) == 1


def test_installing_twice_through_the_cli(cli, repo, server, ckx_home):
    url = server.put("f/data.bin", DATA)
    repo.add("twicecli", source=download(url))
    first = cli("install", "package:twicecli", "--quiet")
    assert first.returncode == 0, first.stderr
    assert "installed" in first.stdout
    second = cli("install", "package:twicecli", "--quiet", "--json")
    assert second.returncode == 0
    assert json.loads(second.stdout)["status"] == "already-installed"
    assert "already installed" in second.stderr
    assert len(package_envs(ckx_home, "twicecli")) == 1


def test_force_reinstalls_and_replaces_the_old_installation(ctx, repo, server, ckx_home):
    url = server.put("f/data.bin", DATA)
    repo.add("forced", source=download(url))
    first = install(ctx, alias="forced")
    second = install(ctx, alias="forced", force=True)
    assert second.status == "installed"
    assert second.env.install_dir != first.env.install_dir
    assert not Path(first.env.install_dir).exists()
    assert [m["uid"] for m in package_envs(ckx_home, "forced")] == [second.env.uid]
    assert leftovers(ckx_home) == [Path(second.env.install_dir).name]


def test_a_removed_install_dir_is_installed_again(ctx, repo, server, ckx_home):
    import shutil

    url = server.put("f/data.bin", DATA)
    repo.add("gone", source=download(url))
    first = install(ctx, alias="gone")
    shutil.rmtree(first.env.install_dir)
    second = install(ctx, alias="gone")
    assert second.status == "installed"
    assert Path(second.env.install_dir).is_dir()


def test_two_concurrent_installs_end_with_one_env(repo, server, ckx_home):
    url = server.put("f/data.bin", DATA)
    server.behave("/f/data.bin", delay=1.0)
    repo.add("conc", source=download(url))
    argv = [sys.executable, "-m", "ckx", "install", "package:conc", "--quiet", "--json"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL, env=cli_env(ckx_home)) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    statuses = sorted(json.loads(out)["status"] for out, _ in outputs)
    assert statuses == ["already-installed", "installed"]
    assert len(package_envs(ckx_home, "conc")) == 1
    assert len(leftovers(ckx_home)) == 1
    assert len(server.requests_for("/f/data.bin")) == 1


def test_abandoned_staging_directories_of_the_package_are_cleared(ctx, repo, ckx_home):
    entry = repo.add("stale", source={"kind": "hook"}, hook=GOOD_HOOK)
    uid = json.loads((entry / "meta.json").read_text())["uid"]
    stale = ckx_home / "tools" / f".staging-{uid}-deadbeef"
    (stale / "sub").mkdir(parents=True)
    other = ckx_home / "tools" / ".staging-0123456789abcdef-cafe0000"
    other.mkdir()
    install(ctx, alias="stale")
    assert not stale.exists()
    assert other.exists()  # another package's staging may belong to a running installation


# ---------------------------------------------------------------------------------------------- choosing


def test_ambiguous_tags_exit_3_under_quiet_listing_candidates(cli, repo, ckx_home):
    repo.add("twin-a", source={"kind": "hook"}, hook=GOOD_HOOK, tags=["twin"])
    repo.add("twin-b", source={"kind": "hook"}, hook=GOOD_HOOK, tags=["twin"])
    proc = cli("install", "package", "--tags=ckxtest,twin", "--quiet")
    assert proc.returncode == 3, proc.stderr
    assert "twin-a" in proc.stderr and "twin-b" in proc.stderr
    assert_nothing_installed(ckx_home)


def test_ambiguous_tags_raise_ambiguous_in_the_api(ctx, repo, ckx_home):
    repo.add("pair-a", source={"kind": "hook"}, hook=GOOD_HOOK, tags=["pair"])
    repo.add("pair-b", source={"kind": "hook"}, hook=GOOD_HOOK, tags=["pair"])
    with pytest.raises(Ambiguous) as info:
        install(ctx, tags="ckxtest,pair")
    assert len(info.value.candidates) == 2
    assert_nothing_installed(ckx_home)


def test_ambiguous_tags_ask_on_a_terminal(repo, ckx_home):
    repo.add("ask-a", source={"kind": "hook"}, hook=GOOD_HOOK, tags=["ask"])
    repo.add("ask-b", source={"kind": "hook"}, hook=GOOD_HOOK, tags=["ask"])
    reporter = ChoosingReporter(1)
    ctx = Context(Home(ckx_home), reporter=reporter, interactive=True)
    try:
        result = install(ctx, tags="ckxtest,ask")
    finally:
        ctx.close()
    assert len(reporter.asked) == 1 and len(reporter.asked[0]) == 2
    assert result.candidate.name in {"ask-a", "ask-b"}
    assert result.candidate.name in reporter.asked[0][1]


def test_ambiguous_variations_pick_the_default_and_say_so(ctx, repo, ckx_home):
    repo.add("varied", source={"kind": "hook"}, hook=GOOD_HOOK, default_variation="small",
             variations={"small": {"tags": ["small"], "env": {"SIZE": "s"}},
                         "large": {"tags": ["large"], "env": {"SIZE": "l"}}})
    result = install(ctx, tags="ckxtest,varied")
    assert result.candidate.variation == "small"
    assert result.env.env["SIZE"] == "s"
    assert "small" in result.env.tags and "large" not in result.env.tags
    assert (Path(result.env.install_dir) / "made.txt").read_text().startswith("small ")
    assert Path(result.env.install_dir).name.startswith("varied-small-")
    assert any("default variation small" in m for m in ctx.reporter.messages)


def test_variation_tags_and_explicit_variation_select_it(ctx, repo):
    repo.add("varied2", source={"kind": "hook"}, hook=GOOD_HOOK, default_variation="small",
             variations={"small": {"tags": ["small"]}, "large": {"tags": ["large"]}})
    by_tag = install(ctx, tags="ckxtest,varied2,large")
    assert by_tag.candidate.variation == "large"
    by_name = install(ctx, alias="varied2", variation="large")
    assert by_name.status == "already-installed" and by_name.env.uid == by_tag.env.uid
    small = install(ctx, alias="varied2")
    assert small.status == "installed" and small.candidate.variation == "small"


def test_unknown_variation_is_not_found(ctx, repo):
    repo.add("varied3", source={"kind": "hook"}, hook=GOOD_HOOK, variations={"a": {"tags": ["a"]}})
    with pytest.raises(NotFound):
        install(ctx, alias="varied3", variation="zzz")


def test_variations_without_a_default_are_ambiguous(ctx, repo):
    repo.add("nodefault", source={"kind": "hook"}, hook=GOOD_HOOK,
             variations={"a": {"tags": ["a"]}, "b": {"tags": ["b"]}})
    with pytest.raises(Ambiguous) as info:
        install(ctx, alias="nodefault")
    assert any("variation a" in c for c in info.value.candidates)


def test_the_package_marked_default_wins(ctx, repo):
    repo.add("plain", source={"kind": "hook"}, hook=GOOD_HOOK, tags=["choice"])
    repo.add("preferred", source={"kind": "hook"}, hook=GOOD_HOOK, tags=["choice"], default=True)
    result = install(ctx, tags="ckxtest,choice")
    assert result.candidate.name == "preferred"
    assert any("default" in m for m in ctx.reporter.messages)


def test_no_matching_package_is_not_found(cli):
    proc = cli("install", "package", "--tags=ckxtest,no-such-thing-anywhere", "--quiet")
    assert proc.returncode == 3
    assert "no package matches" in proc.stderr


def test_neither_tags_nor_alias_is_a_usage_error(cli):
    proc = cli("install", "package", "--quiet")
    assert proc.returncode == 2


def test_version_filter(ctx, repo):
    repo.add("v-one", source={"kind": "hook"}, hook=GOOD_HOOK, tags=["versioned"], version="1.0")
    repo.add("v-two", source={"kind": "hook"}, hook=GOOD_HOOK, tags=["versioned"], version="2.0")
    assert [c.name for c in find_candidates(ctx, tags="ckxtest,versioned", version="2.0")] == ["v-two"]
    result = install(ctx, tags="ckxtest,versioned", version="2.0")
    assert result.env.version == "2.0"


# ---------------------------------------------------------------------------------------------- pip


def test_pip_package_installs_from_a_local_wheel_and_is_importable(ctx, repo, tmp_path, ckx_home):
    wheels = tmp_path / "wheels"
    build_wheel(wheels)
    repo.add("demo-pip", source={"kind": "pip", "requirements": ["ckxdemo-pkg>=1.0"], "import_name": "ckxdemo_pkg",
                                 "pip_args": ["--no-index", "--find-links", str(wheels)]},
             env={"CK_ENV_DEMO_LIB": "{install_dir}"}, soft=None,
             deps={"python": {"tags": "compiler,python", "sort": 0}})
    result = install(ctx, alias="demo-pip")
    env = result.env
    assert env.version == "1.2.3"
    assert set(env.deps) == {"python"}
    assert env.meta["python"] == sys.executable or Path(env.meta["python"]).resolve() == Path(sys.executable).resolve()
    assert env.env["PYTHONPATH"] == env.install_dir
    assert Path(env.install_dir, "ckxdemo_pkg", "__init__.py").is_file()
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = env.env["PYTHONPATH"]
    proc = subprocess.run([sys.executable, "-c", "import ckxdemo_pkg; print(ckxdemo_pkg.ANSWER, ckxdemo_pkg.__file__)"],
                          env=child_env, capture_output=True, text=True, timeout=60, check=True)
    answer, where = proc.stdout.split()
    assert answer == "42" and where.startswith(env.install_dir)
    assert "export PYTHONPATH=" in (Path(env.path) / "env.sh").read_text()


@pytest.mark.slow
def test_pip_args_from_the_environment_and_local_path_directory(ctx, repo, tmp_path, ckx_home, monkeypatch):
    wheels = tmp_path / "wheels"
    build_wheel(wheels, version="2.0.0")
    repo.add("demo-pip-env", source={"kind": "pip", "requirements": ["ckxdemo-pkg"], "import_name": "ckxdemo_pkg"},
             soft=None)
    monkeypatch.setenv("CKX_PIP_ARGS", f"--no-index --find-links {wheels}")
    assert install(ctx, alias="demo-pip-env").env.version == "2.0.0"
    monkeypatch.delenv("CKX_PIP_ARGS")
    # The air-gapped route: a directory of wheels as --local_path (pip gets --no-index --find-links DIR).
    result = install(ctx, alias="demo-pip-env", local_path=wheels, force=True)
    assert result.status == "installed" and result.env.version == "2.0.0"


def test_pip_version_pins_the_requirement(ctx, repo, tmp_path):
    wheels = tmp_path / "wheels"
    build_wheel(wheels, version="1.0.0")
    build_wheel(wheels, version="3.0.0")
    repo.add("demo-pin", source={"kind": "pip", "requirements": ["ckxdemo-pkg"], "import_name": "ckxdemo_pkg",
                                 "pip_args": ["--no-index", "--find-links", str(wheels)]}, soft=None)
    assert install(ctx, alias="demo-pin", version="1.0.0").env.version == "1.0.0"


def test_pip_failure_leaves_nothing(ctx, repo, tmp_path, ckx_home):
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    repo.add("demo-pip-fail", source={"kind": "pip", "requirements": ["ckxdemo-not-there"],
                                      "pip_args": ["--no-index", "--find-links", str(empty)]}, soft=None)
    with pytest.raises(CkxError) as info:
        install(ctx, alias="demo-pip-fail")
    assert "pip install" in str(info.value) and "ckxdemo-not-there" in str(info.value)
    assert "--local_path" in (info.value.hint or "")
    assert_nothing_installed(ckx_home)


def test_pip_import_check_failure_leaves_nothing(ctx, repo, tmp_path, ckx_home):
    wheels = tmp_path / "wheels"
    build_wheel(wheels)
    repo.add("demo-bad-import", source={"kind": "pip", "requirements": ["ckxdemo-pkg"], "import_name": "not_in_wheel",
                                        "pip_args": ["--no-index", "--find-links", str(wheels)]}, soft=None)
    with pytest.raises(CkxError, match="import not_in_wheel"):
        install(ctx, alias="demo-bad-import")
    assert_nothing_installed(ckx_home)


def test_pip_package_already_available_in_the_interpreter_is_not_reinstalled(cli, ckx_home):
    proc = cli("install", "package", "--tags=lib,python-package,onnxruntime-cpu", "--quiet", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "already-available"
    assert result["version"] == importlib.metadata.version("onnxruntime")
    assert "already available" in proc.stderr
    assert leftovers(ckx_home) == []


@pytest.mark.parametrize("tags, distribution", [
    ("lib,python-package,numpy", "numpy"),
    ("lib,python-package,onnxruntime-cpu", "onnxruntime"),
    ("lib,python-package,torch", "torch"),
    ("lib,python-package,cv2,opencv", "opencv-python-headless"),
    ("lib,python-package,mlperf,loadgen", "mlcommons-loadgen"),
    ("lib,python-package,onnx", "onnx"),
])
def test_builtin_pip_packages_are_found_in_this_interpreter(ctx, ckx_home, tags, distribution):
    result = install(ctx, tags=tags)
    assert result.status == "already-available"
    assert result.env.version == importlib.metadata.version(distribution)
    assert result.env.soft == result.candidate.meta["soft"]
    assert leftovers(ckx_home) == []


# ---------------------------------------------------------------------------------------------- the real meta


def test_real_zenodo_url_mapped_to_loopback_and_a_wrong_file_exits_5(cli, server, ckx_home):
    """The built-in package's real URLs, mapped with CKX_URL_MAP (the meta is never copied or edited)."""
    meta = json.loads((ROOT / "packages" / "model-resnet50-mlperf-onnx" / "meta.json").read_text())
    default = meta["default_variation"]
    expected = meta["variations"][default]["source"]["md5"]
    first_url = meta["variations"][default]["source"]["urls"][0]
    assert first_url.startswith("https://zenodo.org/")
    impostor = b"this is not resnet50" * 1000
    server.put("zenodo" + first_url[len("https://zenodo.org"):], impostor)
    url_map = f"https://zenodo.org={server.url}/zenodo"
    proc = cli("install", "package:model-resnet50-mlperf-onnx", "--quiet", env={"CKX_URL_MAP": url_map})
    assert proc.returncode == 5, proc.stderr
    assert expected in proc.stderr and hashlib.md5(impostor).hexdigest() in proc.stderr
    assert "Traceback" not in proc.stderr
    assert server.requests_for("/zenodo" + first_url[len("https://zenodo.org"):])
    assert leftovers(ckx_home) == []
    assert package_envs(ckx_home, "model-resnet50-mlperf-onnx") == []


def test_real_meta_download_failure_names_the_embedded_default(cli, ckx_home):
    url_map = f"https://zenodo.org={unused_url('zenodo').rstrip('/')}"
    proc = cli("install", "package:model-resnet50-mlperf-onnx", "--quiet", env={"CKX_URL_MAP": url_map})
    assert proc.returncode == 1, proc.stderr
    hint = proc.stderr.split("hint:", 1)[1]
    assert "--local_path=FILE" in hint
    assert "model-efficientnet-lite0-onnx" in hint and "--offline" in hint
    assert leftovers(ckx_home) == []


def test_builtin_pip_packages_are_found_by_their_tags(ctx):
    expected = {
        "lib,python-package,numpy": "lib-python-numpy",
        "lib,python-package,onnxruntime,onnxruntime-cpu": "lib-python-onnxruntime-cpu",
        "lib,python-package,torch": "lib-python-torch",
        "lib,python-package,cv2,opencv": "lib-python-opencv",
        "lib,python-package,mlperf,loadgen": "lib-python-loadgen",
        "lib,python-package,onnx": "lib-python-onnx",
    }
    for tags, alias in expected.items():
        names = [c.name for c in find_candidates(ctx, tags=tags)]
        assert alias in names, (tags, names)
    onnx_only = [c.name for c in find_candidates(ctx, tags="lib,python-package,onnx")]
    assert onnx_only == ["lib-python-onnx"]
    torch = find_candidates(ctx, alias="lib-python-torch")[0]
    assert torch.meta["source"]["requirements"] == ["torch==2.13.0"]
    for candidate in find_candidates(ctx, tags="lib,python-package"):
        if candidate.record.repo == "builtin":
            assert candidate.meta["soft"].startswith("lib.python."), candidate.name
