"""Sharing repos: `ckx pull repo` over git, and `ckx zip` / `ckx unzip` with checked, safe extraction.

Pull
    A repo is cloned (``git clone``, argv list, timeout, never prompting) into a temporary directory
    under ``$CKX_HOME/repos`` and only then renamed into place and registered: a failed clone leaves
    nothing behind and registers nothing. Pulling a registered repo fetches and fast-forwards it; a
    repo whose history diverged from its origin is an error. Nothing from the pulled repo runs: git
    hooks point at an empty directory (the clone gets no template hooks either) and nothing is
    pip-installed. The repos a repo declares (CK: ``.ckr.json`` ``dict.repo_deps``; native:
    ``ckx-repo.json`` ``deps``) are pulled too, without asking.

Zip and unzip
    Archives hold paths relative to the repo root, as CK's ``ckr.zip`` does. Extraction checks every
    member before anything is written: absolute names, ``..`` components, ``.git`` components, links
    (zip members with a symlink mode), special files, duplicates and members that would be written
    through a symlink already on disk are refused (UnsafeArchive, exit 5). Existing entries are
    skipped unless ``--overwrite``; CK-layout entries unzipped into a native repo are converted to
    the native layout (``.cm/meta.json`` -> ``meta.json`` with uid, alias and tags).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ckx.core.cid import Cid, check_name, has_wildcard, is_uid, new_uid
from ckx.store.context import Context
from ckx.store.entry import META_SCHEMA_VERSION, normalise_tags
from ckx.core.errors import CkxError, IntegrityError, MetaError, NotFound, UnsafeArchive, UsageError
from ckx.core.inputs import as_bool
from ckx.store.generic import find_entries, resolve_entry
from ckx.core.home import LOCAL_REPO_NAME, builtin_repo_path
from ckx.store.index import EntryRecord, Query
from ckx.core.jsonio import read_json, usual_file_mode
from ckx.store.repo import (
    CK_REPO_FILE, DIR_KINDS, META_NAMES, NATIVE_REPO_FILE, Registry, Repo, detect_format,
    read_repo_description,
)

log = logging.getLogger(__name__)

CATALOG_SCHEMA_VERSION = 1
GIT_TIMEOUT = 900.0  # seconds for one git command (a clone of a large repo on a slow link)
DEFAULT_ARCHIVE = "ckr.zip"
REPO_FILES = (NATIVE_REPO_FILE, CK_REPO_FILE)
_OWNER_AT_NAME = re.compile(r"^([A-Za-z0-9_.-]+)@([A-Za-z0-9_.-]+)$")
_BRANCH_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./+-]*$")
_SCP_LIKE = re.compile(r"^[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+:[^:]")
_URL_SCHEMES = ("https://", "http://", "ssh://", "git://", "file://")
# Directories never archived: version control, caches, and ckx's own half-written staging areas.
_SKIP_DIRS = {".git", "__pycache__", ".mypy_cache", ".pytest_cache"}
_STAGING_PREFIXES = (".tmp-", ".rm-", ".pull-", ".unzip-")


# =========================================================================== the catalog


@dataclass(frozen=True)
class CatalogEntry:
    """One known remote repo: the name users pull it by, its git URL and its format."""

    name: str
    url: str
    format: str = "ck"
    description: str = ""
    aliases: tuple[str, ...] = ()


def catalog_path() -> Path:
    """``repos/catalog.json`` of the ckx installation (the built-in repo's root)."""
    return builtin_repo_path() / "repos" / "catalog.json"


def load_catalog(path: Path | None = None) -> dict[str, CatalogEntry]:
    """The catalog of known repos, keyed by every name and alias; empty when the file is missing.

    Raises MetaError naming the file when it is malformed or of a newer schema version.
    """
    path = path or catalog_path()
    if not path.is_file():
        return {}
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("repos"), dict):
        raise MetaError(f"{path}: expected an object with a 'repos' object")
    version = data.get("schema_version")
    if not isinstance(version, int) or version > CATALOG_SCHEMA_VERSION:
        raise MetaError(f"{path}: field 'schema_version': {version!r} is not a version this ckx reads (1)")
    catalog: dict[str, CatalogEntry] = {}
    for name, item in data["repos"].items():
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            raise MetaError(f"{path}: field 'repos.{name}.url' must be a string")
        entry = CatalogEntry(name, item["url"], str(item.get("format", "ck")), str(item.get("description", "")),
                             tuple(str(a) for a in item.get("aliases", ())))
        for key in (name, *entry.aliases):
            catalog[key] = entry
    return catalog


def url_for_alias(alias: str, catalog: dict[str, CatalogEntry]) -> tuple[str, str] | None:
    """(URL, where it came from) for a repo alias: the catalog, else CK's ``owner@name`` GitHub rule."""
    entry = catalog.get(alias)
    if entry is not None:
        return entry.url, f"the catalog ({entry.name})"
    match = _OWNER_AT_NAME.match(alias)
    if match:
        return f"https://github.com/{match.group(1)}/{match.group(2)}", "the owner@name rule (GitHub)"
    return None


# =========================================================================== git


class GitError(CkxError):
    """A git command failed or timed out; the message holds the command's last lines of output."""


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"  # never ask for a user name or password
    env["GCM_INTERACTIVE"] = "never"
    env["GIT_LFS_SKIP_SMUDGE"] = "1"  # no filter process runs on checkout
    env["LC_ALL"] = "C"
    return env


@contextlib.contextmanager
def _no_hooks() -> Iterator[Path]:
    """An empty directory: the hooks path and clone template, so no hook of any repo ever runs."""
    with tempfile.TemporaryDirectory(prefix="ckx-git-nohooks-") as empty:
        yield Path(empty)


def _git(args: list[str], *, hooks: Path, cwd: Path | None = None, timeout: float = GIT_TIMEOUT,
         check: bool = True, what: str | None = None) -> subprocess.CompletedProcess:
    """Run one git command without hooks or prompts; GitError when it fails (with ``check``) or times out."""
    argv = ["git", "-c", f"core.hooksPath={hooks}", "-c", "protocol.ext.allow=never", *args]
    label = what or "git " + " ".join(args[:2])
    try:
        # setsid: without a controlling terminal neither git nor ssh can open /dev/tty to prompt; and as its
        # own process group, git goes down on a timeout together with its children (remote-https, ssh).
        proc = subprocess.Popen(argv, cwd=cwd, env=_git_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    except FileNotFoundError:
        raise GitError("git is not installed (or not on PATH)", hint="install git, or use 'ckx unzip' with an archive") from None
    with proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            if isinstance(exc, subprocess.TimeoutExpired):
                raise GitError(f"{label} timed out after {timeout:.0f} s",
                               hint="check the network, or pass a larger --timeout") from None
            raise
    result = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
    if check and result.returncode != 0:
        lines = [line.strip() for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
        fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
        tail = "; ".join(fatal[:2] or lines[-3:])
        raise GitError(f"{label} failed (exit {result.returncode}): {tail or 'no output'}")
    return result


def _check_url(url: str) -> str:
    """Refuse URLs git could take for options or for its command-running transports."""
    if not url or url.startswith("-") or "::" in url or any(c in url for c in "\0\n\r"):
        raise UsageError(f"refusing the repo URL {url!r}", hint="use an https://, ssh://, git:// or file:// URL")
    if url.startswith(_URL_SCHEMES) or _SCP_LIKE.match(url) or url.startswith("/"):
        return url
    raise UsageError(f"unsupported repo URL {url!r}", hint="use an https://, ssh://, git:// or file:// URL, or an absolute path")


def _same_url(first: str, second: str) -> bool:
    def norm(url: str) -> str:
        url = url.strip().rstrip("/")
        return url.removesuffix(".git")

    return norm(first) == norm(second)


def _name_from_url(url: str) -> str:
    name = re.split(r"[/:]", url.rstrip("/"))[-1]
    return name.removesuffix(".git")


# =========================================================================== pull


@dataclass(frozen=True)
class PullOutcome:
    """What a pull did to one repo. ``state``: cloned, updated, up-to-date, ahead, present or failed."""

    name: str
    state: str
    path: Path | None = None
    url: str | None = None
    format: str | None = None
    commit: str | None = None
    error: str | None = None
    dependency_of: str | None = None

    def to_dict(self) -> dict:
        data: dict[str, Any] = {"name": self.name, "state": self.state}
        for key in ("url", "format", "commit", "error", "dependency_of"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.path is not None:
            data["path"] = str(self.path)
        return data


def declared_deps(path: Path) -> list[tuple[str, str | None]]:
    """(name, URL or None) of the repos the repo at ``path`` declares it needs.

    CK: ``.ckr.json`` ``dict.repo_deps[]`` with ``repo_uoa`` and ``repo_url``/``url``; native:
    ``ckx-repo.json`` ``deps`` as names or ``{"name", "url"}`` objects.
    """
    deps: list[tuple[str, str | None]] = []
    if (path / NATIVE_REPO_FILE).is_file():
        data = read_json(path / NATIVE_REPO_FILE)
        items = data.get("deps", []) if isinstance(data, dict) else []
        for item in items if isinstance(items, list) else []:
            if isinstance(item, str):
                deps.append((item, None))
            elif isinstance(item, dict) and isinstance(item.get("name") or item.get("repo_uoa"), str):
                deps.append((item.get("name") or item["repo_uoa"], item.get("url") or item.get("repo_url")))
    elif (path / CK_REPO_FILE).is_file():
        data = read_json(path / CK_REPO_FILE)
        inner = data.get("dict", {}) if isinstance(data, dict) else {}
        for item in inner.get("repo_deps", []) if isinstance(inner, dict) else []:
            if isinstance(item, dict) and isinstance(item.get("repo_uoa"), str):
                deps.append((item["repo_uoa"], item.get("repo_url") or item.get("url")))
    return [(name, url if isinstance(url, str) and url else None) for name, url in deps]


def pull_repo(ctx: Context, *, name: str | None = None, url: str | None = None, branch: str | None = None,
              timeout: float = GIT_TIMEOUT, with_deps: bool = True) -> list[PullOutcome]:
    """Clone (or fast-forward) a repo, register it, then pull the repos it declares.

    ``name`` is the alias to register (from the catalog when no ``url`` is given); without it the
    name comes from the repo's own file, then from the URL. Returns the outcome of the asked repo
    first, then of each dependency. A dependency that cannot be pulled is a warning (its outcome
    says "failed"); the asked repo failing raises GitError, UsageError or NotFound and leaves
    nothing registered and nothing under $CKX_HOME/repos.
    """
    if branch is not None and not _BRANCH_RE.match(branch):
        raise UsageError(f"invalid branch name {branch!r}")
    catalog = load_catalog()
    first = _pull_one(ctx, name, url, branch, timeout, catalog)
    outcomes = [first]
    if not with_deps or first.path is None:
        return outcomes
    seen = {first.name}
    pending = [(dep, dep_url, first.name) for dep, dep_url in declared_deps(first.path)]
    while pending:
        dep, dep_url, parent = pending.pop(0)
        if dep in seen:
            continue
        seen.add(dep)
        present = _registered_as(ctx.registry, dep, catalog)
        if present is not None:
            outcomes.append(PullOutcome(present.name, "present", present.path, present.url, present.format,
                                        dependency_of=parent))
            if present.path.is_dir():  # its own dependencies may still be missing
                pending.extend((d, u, present.name) for d, u in declared_deps(present.path))
            continue
        try:
            check_name(dep, "repo name")
            outcome = _pull_one(ctx, dep, dep_url, None, timeout, catalog)
        except CkxError as exc:
            ctx.warn(f"dependency {dep} of repo {parent} was not pulled: {exc.message}")
            outcomes.append(PullOutcome(dep, "failed", url=dep_url, error=exc.message, dependency_of=parent))
            continue
        outcomes.append(PullOutcome(outcome.name, outcome.state, outcome.path, outcome.url, outcome.format,
                                    outcome.commit, dependency_of=parent))
        if outcome.path is not None:
            pending.extend((d, u, outcome.name) for d, u in declared_deps(outcome.path))
    return outcomes


def _registered_as(registry: Registry, name: str, catalog: dict[str, CatalogEntry]) -> Repo | None:
    """The registered repo called ``name`` or by another name of the same catalog entry."""
    if name in registry.repos:
        return registry.repos[name]
    entry = catalog.get(name)
    for other in (entry.name, *entry.aliases) if entry else ():
        if other in registry.repos:
            return registry.repos[other]
    return None


def _pull_one(ctx: Context, name: str | None, url: str | None, branch: str | None, timeout: float,
              catalog: dict[str, CatalogEntry]) -> PullOutcome:
    if name:
        check_name(name, "repo name")
        if name in ctx.registry.repos:
            return _update(ctx, ctx.registry.repos[name], url, branch, timeout)
    elif not url:
        raise UsageError("'pull repo' needs a repo alias or --url", hint="usage: ckx pull repo:ALIAS [--url=URL] [--branch=NAME]")
    if url and not name:
        for repo in ctx.registry:
            if repo.url and _same_url(repo.url, url):
                return _update(ctx, repo, url, branch, timeout)
    if not url:
        assert name is not None
        found = url_for_alias(name, catalog)
        if found is None:
            known = sorted({entry.name for entry in catalog.values()})
            raise NotFound(f"no known URL for repo {name!r}",
                           hint="give it with --url=URL; the catalog knows: " + ", ".join(known))
        url, source = found
        ctx.info(f"repo {name}: {url} (from {source})")
    return _clone_and_register(ctx, name, _check_url(url), branch, timeout)


def _clone_and_register(ctx: Context, name: str | None, url: str, branch: str | None, timeout: float) -> PullOutcome:
    """Clone into a staging directory, rename it into place, register it; nothing is left on failure."""
    home = ctx.home
    home.ensure()
    staging = Path(tempfile.mkdtemp(prefix=".pull-", dir=home.repos_dir))
    try:
        checkout = staging / "checkout"
        args = ["clone", "--quiet", "--no-recurse-submodules"]
        if branch:
            args += ["--branch", branch]
        with _no_hooks() as hooks:
            ctx.info(f"cloning {url}" + (f" (branch {branch})" if branch else ""))
            _git([*args, f"--template={hooks}", "--", url, str(checkout)], hooks=hooks, timeout=timeout,
                 what=f"git clone of {url}")
            commit = _git(["rev-parse", "--short", "HEAD"], hooks=hooks, cwd=checkout).stdout.strip()
        try:
            fmt = detect_format(checkout)
        except UsageError:
            raise CkxError(f"{url} is not a ckx or CK repo: it has neither {NATIVE_REPO_FILE} nor {CK_REPO_FILE}",
                           hint="nothing was registered") from None
        desc = read_repo_description(checkout)
        repo_name = name or desc.get("name") or _name_from_url(url)
        try:
            check_name(repo_name, "repo name")
        except UsageError:
            raise UsageError(f"cannot name the repo from {url}: {repo_name!r} is not a valid name",
                             hint="give a name: ckx pull repo:NAME --url=URL") from None
        if repo_name in ctx.registry.repos:
            existing = ctx.registry.repos[repo_name]
            raise UsageError(f"repo {repo_name!r} is already registered at {existing.path}",
                             hint=f"update it with 'ckx pull repo:{repo_name}', or pull under another name: "
                                  f"'ckx pull repo:OTHER --url={url}'")
        target = home.repos_dir / repo_name
        if os.path.lexists(target):
            raise CkxError(f"{target} already exists and is not a registered repo",
                           hint=f"move it away, or register it with 'ckx add repo:{repo_name} --path={target}'")
        _move_and_register(ctx, checkout, target, repo_name, fmt, desc, url, what=f"the clone of {url}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ctx.forget_registry()
    return PullOutcome(repo_name, "cloned", target, url, fmt, commit)


def _update(ctx: Context, repo: Repo, url: str | None, branch: str | None, timeout: float) -> PullOutcome:
    """Fetch and fast-forward a registered git checkout; GitError when its history diverged."""
    if not (repo.path / ".git").exists():
        raise UsageError(f"repo {repo.name} at {repo.path} is not a git checkout: there is nothing to pull",
                         hint="repos made with 'ckx add repo' or 'ckx unzip' move with zip/unzip")
    with _no_hooks() as hooks:
        def git(*args: str, **kwargs: Any) -> subprocess.CompletedProcess:
            return _git(list(args), hooks=hooks, cwd=repo.path, timeout=timeout, **kwargs)

        origin = git("remote", "get-url", "origin").stdout.strip()
        if url and not _same_url(url, origin):
            raise UsageError(f"repo {repo.name} was cloned from {origin}, not {url}",
                             hint=f"pull the other URL under another name (ckx pull repo:OTHER --url={url})")
        current = git("rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
        wanted = branch or current
        if wanted == "HEAD":
            raise UsageError(f"repo {repo.name} is not on a branch (detached HEAD)", hint="give one with --branch=NAME")
        ctx.info(f"fetching {repo.name} ({wanted}) from {origin}")
        git("fetch", "--quiet", "origin", wanted, what=f"git fetch of {origin}")
        fetched = git("rev-parse", "FETCH_HEAD").stdout.strip()
        if wanted != current:
            exists = git("show-ref", "--verify", "--quiet", f"refs/heads/{wanted}", check=False).returncode == 0
            if exists:
                git("switch", "--quiet", wanted)
            else:
                git("switch", "--quiet", "-c", wanted, fetched)
        head = git("rev-parse", "HEAD").stdout.strip()
        if head == fetched:
            state = "up-to-date"
        elif _is_ancestor(git, head, fetched):
            git("merge", "--ff-only", "--quiet", fetched, what=f"fast-forward of {repo.name}")
            state = "updated"
        elif _is_ancestor(git, fetched, head):
            state = "ahead"
            ctx.info(f"repo {repo.name} has local commits that {origin} does not have; nothing to pull")
        else:
            raise GitError(
                f"repo {repo.name} has diverged from {origin} ({wanted}): both have commits the other lacks, "
                "so it cannot be fast-forwarded",
                hint=f"reconcile it with git in {repo.path} (rebase or reset), then pull again",
            )
        commit = git("rev-parse", "--short", "HEAD").stdout.strip()
    ctx.forget_registry()
    return PullOutcome(repo.name, state, repo.path, origin, repo.format, commit)


def _is_ancestor(git: Callable[..., subprocess.CompletedProcess], first: str, second: str) -> bool:
    proc = git("merge-base", "--is-ancestor", first, second, check=False)
    if proc.returncode not in (0, 1):
        raise GitError(f"git merge-base failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc.returncode == 0


def action_pull(ctx: Context, inp: dict) -> dict:
    """``ckx pull repo:ALIAS [--url=URL] [--branch=NAME]`` or ``ckx pull repo --url=URL``: clone or update."""
    timeout = _positive_float(inp.get("timeout"), "timeout", GIT_TIMEOUT)
    outcomes = pull_repo(ctx, name=inp.get("entry"), url=inp.get("url"), branch=inp.get("branch"),
                         timeout=timeout, with_deps=not as_bool(inp.get("no_deps"), "no_deps"))
    first = outcomes[0]
    lines = [_describe_outcome(first)]
    deps = outcomes[1:]
    if deps:
        lines.append(f"dependencies of {first.name}:")
        lines += [f"  {_describe_outcome(o)}" for o in deps]
    failed = [o.name for o in deps if o.state == "failed"]
    return {"return": 0, "repo": first.to_dict(), "deps": [o.to_dict() for o in deps], "failed_deps": failed,
            "text": "\n".join(lines)}


def _describe_outcome(outcome: PullOutcome) -> str:
    if outcome.state == "failed":
        return f"{outcome.name}: not pulled ({outcome.error})"
    if outcome.state == "present":
        return f"{outcome.name}: already registered at {outcome.path}"
    commit = f" at {outcome.commit}" if outcome.commit else ""
    return f"{outcome.name}: {outcome.state}{commit} ({outcome.format}, {outcome.path})"


# =========================================================================== zip


@dataclass(frozen=True)
class ZipResult:
    """An archive written by zip_entries or zip_repo."""

    archive: Path
    files: int
    size: int
    entries: tuple[str, ...] = ()
    repo: str | None = None


def _walk_files(root: Path, *, top_excludes: Iterable[str] = (),
                warn: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Regular files under ``root`` in sorted order; symlinks are skipped (with a warning), as are
    VCS and cache directories and ckx's staging directories."""
    top = set(top_excludes)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        keep = []
        for name in sorted(dirnames):
            path = here / name
            if name in _SKIP_DIRS or name.startswith(_STAGING_PREFIXES) or (here == root and name in top):
                continue
            if path.is_symlink():
                if warn:
                    warn(f"not archived: {path} is a symlink")
                continue
            keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            path = here / name
            if path.is_symlink():
                if warn:
                    warn(f"not archived: {path} is a symlink")
                continue
            if name.endswith((".pyc", ".pyo")) or not path.is_file():
                continue
            yield path


def _entry_members(ctx: Context, record: EntryRecord) -> list[tuple[str, Path]]:
    """(archive name, file) of one entry, relative to its repo root; CK entries bring their alias files."""
    repo = ctx.registry.get(record.repo)
    root = repo.path
    members = [(p.relative_to(root).as_posix(), p) for p in _walk_files(record.path, warn=ctx.warn)]
    if repo.format == "ck":
        module_dir = record.path.parent
        names = []
        if record.alias:
            names.append(module_dir / ".cm" / f"alias-a-{record.alias}")
        if record.uid:
            names.append(module_dir / ".cm" / f"alias-u-{record.uid}")
        module_alias = root / ".cm" / f"alias-a-{module_dir.name}"
        names.append(module_alias)
        if module_alias.is_file():
            module_uid = module_alias.read_text(encoding="utf-8").strip()
            if is_uid(module_uid):
                names.append(root / ".cm" / f"alias-u-{module_uid}")
        members += [(p.relative_to(root).as_posix(), p) for p in names if p.is_file() and not p.is_symlink()]
    return members


def _write_zip(archive: Path, members: list[tuple[str, Path]]) -> tuple[int, int]:
    """Write ``members`` (sorted, deduplicated) into ``archive`` atomically; returns (files, bytes)."""
    unique: dict[str, Path] = {}
    for name, path in members:
        previous = unique.get(name)
        if previous is not None and previous.resolve() != path.resolve():
            raise UsageError(f"two files would be stored as {name} in the archive: {previous} and {path}",
                             hint="zip entries of different repos that share a path into separate archives")
        unique[name] = path
    archive.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{archive.name}.", suffix=".tmp", dir=archive.parent)
    try:
        with os.fdopen(fd, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(unique):
                path = unique[name]
                st = path.stat()
                when = _dt.datetime.fromtimestamp(max(st.st_mtime, 315_532_800))  # zip dates start in 1980
                info = zipfile.ZipInfo(name, date_time=when.timetuple()[:6])
                info.create_system = 3
                info.external_attr = (stat.S_IFREG | (st.st_mode & 0o755) | 0o644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(path, "rb") as source, zf.open(info, "w") as target:
                    shutil.copyfileobj(source, target, 1 << 20)
        os.chmod(tmp, usual_file_mode())
        os.replace(tmp, archive)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return len(unique), archive.stat().st_size


def zip_entries(ctx: Context, records: list[EntryRecord], archive: Path) -> ZipResult:
    """Archive entries (paths relative to their repo roots) into ``archive``; returns what was written."""
    members: list[tuple[str, Path]] = []
    for record in records:
        members += _entry_members(ctx, record)
    files, size = _write_zip(archive, [(n, p) for n, p in members if p.resolve() != archive.resolve()])
    return ZipResult(archive, files, size, tuple(r.cid for r in records))


def zip_repo(ctx: Context, repo: Repo, archive: Path) -> ZipResult:
    """Archive a whole repo, its repo file included (``.git`` and caches left out) into ``archive``."""
    if not repo.path.is_dir():
        raise NotFound(f"repo {repo.name} has no directory at {repo.path}")
    target = archive.resolve()
    members = [(p.relative_to(repo.path).as_posix(), p)
               for p in _walk_files(repo.path, top_excludes=repo.exclude_dirs, warn=ctx.warn) if p.resolve() != target]
    if not any(name in REPO_FILES for name, _ in members):
        raise CkxError(f"repo {repo.name} at {repo.path} has no {NATIVE_REPO_FILE} or {CK_REPO_FILE}")
    files, size = _write_zip(archive, members)
    return ZipResult(archive, files, size, repo=repo.name)


def _stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


def _archive_path(inp: dict, repo: str, module: str) -> Path:
    if inp.get("archive_name") and as_bool(inp.get("auto_name"), "auto_name"):
        raise UsageError("give either --archive_name or --auto_name, not both")
    if as_bool(inp.get("auto_name"), "auto_name"):
        name = f"ckr-{repo}-{module}-{_stamp()}.zip"
    else:
        name = str(inp.get("archive_name") or DEFAULT_ARCHIVE)
    path = Path(name).expanduser()
    if path.is_dir():
        raise UsageError(f"--archive_name={name} is a directory", hint="give a file name, e.g. --archive_name=entries.zip")
    return path if path.is_absolute() else Path.cwd() / path


def action_zip(ctx: Context, inp: dict) -> dict:
    """``ckx zip CID [CID ...] [--tags=...] [--archive_name=F] [--auto_name]`` or ``ckx zip repo:NAME``."""
    cids = _request_cids(inp)
    repos = [cid for cid in cids if cid.module == "repo"]
    if repos:
        if len(cids) > 1 or not repos[0].entry:
            raise UsageError("'zip repo:NAME' archives one whole repo; zip entries in a separate command",
                             hint="usage: ckx zip repo:NAME [--archive_name=F]")
        repo = ctx.registry.get(repos[0].entry)
        archive = _archive_path(inp, repo.name, "repo")
        result = zip_repo(ctx, repo, archive)
        return {"return": 0, "archive": str(result.archive), "files": result.files, "size": result.size,
                "repo": repo.name, "text": f"wrote {result.archive}: repo {repo.name}, {result.files} files"}
    records: list[EntryRecord] = []
    seen: set[str] = set()
    for cid in cids:
        if not cid.module or has_wildcard(cid.module):
            raise UsageError(f"'zip' needs a module in {cid}", hint="usage: ckx zip MODULE:ENTRY | MODULE:* | repo:NAME")
        if not cid.entry and not inp.get("tags"):
            raise UsageError(f"'zip {cid}' names no entry", hint=f"zip them all with 'ckx zip {cid.module}:*', or add --tags=...")
        if cid.entry and not has_wildcard(cid.entry) and not inp.get("tags"):
            found = [resolve_entry(ctx, cid)]
        else:
            found = find_entries(ctx, Cid(cid.module, cid.entry or "*", cid.repo), tags=inp.get("tags"))
            if not found:
                raise NotFound(f"nothing matches {cid}" + (f" with tags {inp['tags']}" if inp.get("tags") else ""))
        for record in found:
            if record.cid not in seen:
                seen.add(record.cid)
                records.append(record)
    repo_names = sorted({r.repo for r in records})
    modules = sorted({r.module for r in records})
    archive = _archive_path(inp, repo_names[0] if len(repo_names) == 1 else "mixed",
                            modules[0] if len(modules) == 1 else "mixed")
    result = zip_entries(ctx, records, archive)
    count = len(records)
    return {"return": 0, "archive": str(result.archive), "files": result.files, "size": result.size,
            "entries": list(result.entries),
            "text": f"wrote {result.archive}: {count} entr{'y' if count == 1 else 'ies'}, {result.files} files"}


def _request_cids(inp: dict) -> list[Cid]:
    texts = inp.get("cids") or []
    if texts:
        cids = [Cid.parse(str(text)) for text in texts]
        if inp.get("repo"):
            cids = [c if c.repo or c.module == "repo" else Cid(c.module, c.entry, inp["repo"]) for c in cids]
        return cids
    if not inp.get("module"):
        raise UsageError("'zip' needs a CID", hint="usage: ckx zip MODULE:ENTRY | MODULE:* | repo:NAME [--archive_name=F]")
    return [Cid(inp["module"], inp.get("entry"), inp.get("repo"))]


# =========================================================================== unzip: checking


@dataclass(frozen=True)
class _Member:
    """An archive file that passed every check: its path parts below the repo root."""

    parts: tuple[str, ...]
    info: zipfile.ZipInfo

    @property
    def name(self) -> str:
        return "/".join(self.parts)


def _refused(archive: Path, name: str, why: str) -> UnsafeArchive:
    return UnsafeArchive(f"refusing to unzip {archive}: member {name!r} {why}",
                         hint="the archive is unsafe or malformed; nothing was written")


def check_zip_members(archive: Path, zf: zipfile.ZipFile) -> list[_Member]:
    """Every file member of ``zf``, checked: UnsafeArchive for absolute names, ``..`` or ``.git``
    components, NUL bytes, symlink or special-file modes, duplicates and file/directory clashes;
    IntegrityError for encrypted members. Directory members are checked and dropped."""
    files: dict[tuple[str, ...], _Member] = {}
    dirs: set[tuple[str, ...]] = set()
    for info in zf.infolist():
        name = info.filename
        if "\0" in name:
            raise _refused(archive, name, "contains a NUL byte")
        text = name.replace("\\", "/")
        if text.startswith("/") or (len(text) >= 2 and text[1] == ":" and text[0].isalpha()):
            raise _refused(archive, name, "has an absolute path")
        parts = tuple(p for p in text.split("/") if p not in ("", "."))
        if ".." in parts:
            raise _refused(archive, name, "has a '..' component")
        if any(p.lower() == ".git" for p in parts):
            raise _refused(archive, name, "would write into a .git directory")
        if info.flag_bits & 0x1:
            raise IntegrityError(f"cannot unzip {archive}: member {name!r} is encrypted")
        mode = info.external_attr >> 16 if info.create_system == 3 else 0
        kind = stat.S_IFMT(mode)
        if stat.S_ISLNK(mode):
            raise _refused(archive, name, "is a symbolic link (links are not extracted)")
        if not parts:
            continue
        if info.is_dir() or stat.S_ISDIR(mode):
            dirs.add(parts)
            continue
        if kind not in (0, stat.S_IFREG):
            raise _refused(archive, name, f"is a special file (mode {oct(mode)})")
        if parts in files:
            raise _refused(archive, name, "appears twice")
        files[parts] = _Member(parts, info)
    for parts in files:
        for depth in range(1, len(parts)):
            if parts[:depth] in files:
                raise _refused(archive, "/".join(parts), f"would be written below the file {'/'.join(parts[:depth])!r}")
        if parts in dirs:
            raise _refused(archive, "/".join(parts), "is both a file and a directory")
    return [files[parts] for parts in sorted(files)]


def _check_no_links_on_disk(archive: Path, root: Path, parts: tuple[str, ...]) -> None:
    """Refuse a destination reached through a symlink below ``root`` (a link planted in the repo)."""
    path = root
    for part in parts[:-1]:
        path = path / part
        if path.is_symlink():
            raise _refused(archive, "/".join(parts), f"would be written through the symlink {path}")
        if not path.exists():
            return


# =========================================================================== unzip: planning


@dataclass
class _EntryPlan:
    """One entry of the archive and where it goes."""

    module: str
    name: str
    uid: str | None
    layout: str  # "ckx" or "ck"
    source_dir: tuple[str, ...]
    dest: Path
    files: dict[tuple[str, ...], _Member | bytes] = field(default_factory=dict)  # relative to the entry dir
    exists: bool = False

    @property
    def label(self) -> str:
        return f"{self.module}:{self.name}"


@dataclass(frozen=True)
class UnzipResult:
    """What unzip_archive did."""

    repo: str
    created: bool
    extracted: tuple[str, ...]
    overwritten: tuple[str, ...]
    skipped: tuple[str, ...]
    files: int
    clashes: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"repo": self.repo, "created": self.created, "extracted": list(self.extracted),
                "overwritten": list(self.overwritten), "skipped": list(self.skipped), "files": self.files,
                "clashes": list(self.clashes)}


def _read_member_json(zf: zipfile.ZipFile, member: _Member, archive: Path) -> dict:
    try:
        data = json.loads(zf.read(member.info))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MetaError(f"{archive}: {member.name} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise MetaError(f"{archive}: {member.name} must hold a JSON object")
    return data


def _read_member_meta(zf: zipfile.ZipFile, member: _Member, archive: Path) -> dict:
    if member.parts[-1].endswith((".yaml", ".yml")):
        import yaml

        try:
            data = yaml.safe_load(zf.read(member.info))
        except yaml.YAMLError as exc:
            raise MetaError(f"{archive}: {member.name} is not valid YAML ({exc})") from None
        if not isinstance(data, dict):
            raise MetaError(f"{archive}: {member.name} must hold a mapping")
        return data
    return _read_member_json(zf, member, archive)


def _archive_repo_file(members: list[_Member]) -> _Member | None:
    for member in members:
        if len(member.parts) == 1 and member.parts[0] in REPO_FILES:
            return member
    return None


def _repo_name_in(zf: zipfile.ZipFile, member: _Member, archive: Path) -> str | None:
    data = _read_member_json(zf, member, archive)
    if member.parts[0] == NATIVE_REPO_FILE:
        name = data.get("name")
    else:
        name = data.get("data_uoa") or data.get("data_alias")
    return name if isinstance(name, str) and name else None


def _plan_entries(zf: zipfile.ZipFile, archive: Path, members: list[_Member], repo: Repo, *, lenient: bool = False
                  ) -> tuple[list[_EntryPlan], list[_Member], list[str]]:
    """Split the archive into entries (converted to ``repo``'s layout) and other files.

    Returns (entries, other files, names of files deliberately not written). An unreadable meta
    raises MetaError, or with ``lenient`` leaves that entry's files among the other files.
    """
    by_dir: dict[tuple[str, str], list[_Member]] = {}
    others: list[_Member] = []
    ck_alias: dict[tuple[str, ...], str] = {}
    unused: list[str] = []
    for member in members:
        parts = member.parts
        if len(parts) == 1 and parts[0] in REPO_FILES:
            unused.append(member.name)
        elif parts[0] == ".cm" or (len(parts) >= 2 and parts[1] == ".cm"):
            # CK alias files: read for ids, written only when the target is itself CK-format (never, here).
            if len(parts) == 3 and parts[1] == ".cm":
                ck_alias[parts] = zf.read(member.info).decode("utf-8", "replace").strip()
            unused.append(member.name)
        elif len(parts) >= 3:
            by_dir.setdefault((parts[0], parts[1]), []).append(member)
        else:
            others.append(member)
    plans: list[_EntryPlan] = []
    for (module_dir, dirname), items in sorted(by_dir.items()):
        inner = {m.parts[2:]: m for m in items}
        ck_meta = inner.get((".cm", "meta.json"))
        native_meta = next((inner[(n,)] for n in META_NAMES if (n,) in inner), None)
        try:
            if ck_meta is not None:
                plans.append(_plan_ck_entry(zf, archive, repo, module_dir, dirname, inner, ck_meta, ck_alias))
                continue
            if native_meta is not None:
                module = DIR_KINDS.get(module_dir, module_dir)
                meta = _read_member_meta(zf, native_meta, archive)
                uid = meta.get("uid") if isinstance(meta.get("uid"), str) else (dirname if is_uid(dirname) else None)
                alias = meta.get("alias") if isinstance(meta.get("alias"), str) else None
                plans.append(_EntryPlan(module, alias or dirname, uid, "ckx", (module_dir, dirname),
                                        repo.module_dir(module) / dirname, dict(inner)))
                continue
        except (MetaError, UsageError):
            if not lenient:
                raise
        others.extend(items)
    return plans, others, unused


def _plan_ck_entry(zf: zipfile.ZipFile, archive: Path, repo: Repo, module: str, dirname: str,
                   inner: dict[tuple[str, ...], _Member], ck_meta: _Member, ck_alias: dict[tuple[str, ...], str]
                   ) -> _EntryPlan:
    """A CK-layout entry for a native repo: ``.cm/meta.json`` becomes ``meta.json`` with uid, alias, tags."""
    meta = _read_member_json(zf, ck_meta, archive)
    if is_uid(dirname):
        uid, alias = dirname, ck_alias.get((module, ".cm", f"alias-u-{dirname}"))
    else:
        uid, alias = ck_alias.get((module, ".cm", f"alias-a-{dirname}")), dirname
        info = inner.get((".cm", "info.json"))
        if not (uid and is_uid(uid)) and info is not None:
            uid = _read_member_json(zf, info, archive).get("backup_data_uid")
    uid = uid if isinstance(uid, str) and is_uid(uid) else new_uid()
    if alias is not None:
        check_name(alias, "alias")
    meta = dict(meta)
    meta.update({"uid": uid, "alias": alias, "tags": normalise_tags(meta.get("tags"))})
    meta.setdefault("schema_version", META_SCHEMA_VERSION)
    files: dict[tuple[str, ...], _Member | bytes] = {p: m for p, m in inner.items() if p[0] != ".cm"}
    files[("meta.json",)] = (json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    return _EntryPlan(module, alias or uid, uid, "ck", (module, dirname), repo.module_dir(module) / (alias or uid), files)


def _uid_clashes(ctx: Context, plans: list[_EntryPlan]) -> list[str]:
    """Entries of other repos (or other directories) that already use an archive entry's uid."""
    clashes = []
    for plan in plans:
        if not plan.uid:
            continue
        for record in ctx.index.query(Query(module=plan.module, name=plan.uid)):
            if record.uid == plan.uid and record.path != plan.dest:
                clashes.append(f"uid {plan.uid} of {plan.label} in the archive is also used by {record.cid} at {record.path}")
    return clashes


# =========================================================================== unzip: writing


def _member_bytes(zf: zipfile.ZipFile, source: _Member | bytes) -> Iterator[bytes]:
    if isinstance(source, bytes):
        yield source
        return
    with zf.open(source.info) as stream:
        while chunk := stream.read(1 << 20):
            yield chunk


def _write_member(zf: zipfile.ZipFile, source: _Member | bytes, path: Path) -> None:
    """Write one file atomically (a temporary file renamed over ``path``, replacing a link, not following it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in _member_bytes(zf, source):
                out.write(chunk)
        mode = 0o644
        if isinstance(source, _Member) and source.info.create_system == 3:
            mode = ((source.info.external_attr >> 16) & 0o755) | 0o644
        os.chmod(tmp, mode)
        if isinstance(source, _Member):
            when = _dt.datetime(*source.info.date_time).timestamp()
            os.utime(tmp, (when, when))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_new_entry(zf: zipfile.ZipFile, plan: _EntryPlan) -> int:
    """Stage a new entry beside its destination and rename it into place."""
    plan.dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-unzip-{plan.dest.name}-", dir=plan.dest.parent))
    try:
        for parts, source in plan.files.items():
            _write_member(zf, source, staging.joinpath(*parts))
        os.chmod(staging, 0o755)
        os.rename(staging, plan.dest)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise CkxError(f"cannot write {plan.dest}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return len(plan.files)


def unzip_archive(ctx: Context, archive: Path, *, repo_name: str | None = None, overwrite: bool = False) -> UnzipResult:
    """Extract a ckx/CK zip into a repo after checking every member.

    Into ``repo_name`` (registered) or, without it, into the repo named by the archive's own repo
    file (created and registered when new) or else into ``local``. Entries already there are
    skipped unless ``overwrite``. Raises UnsafeArchive (exit 5, nothing written) for a refused
    member, IntegrityError for a file that is not a zip, NotFound for an unknown repo_name with an
    archive of entries only, UsageError for a CK-format target (ckx does not write into those).
    """
    if not archive.is_file():
        raise NotFound(f"archive {archive} does not exist")
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise IntegrityError(f"{archive} is not a zip archive ({exc})") from None
    with zf:
        members = check_zip_members(archive, zf)
        if not members:
            raise UsageError(f"{archive} holds no files")
        repo_file = _archive_repo_file(members)
        registry = ctx.registry
        if repo_name and repo_name in registry.repos:
            return _merge(ctx, zf, archive, members, registry.repos[repo_name], overwrite)
        if repo_name:
            check_name(repo_name, "repo name")
            if repo_file is None:
                raise NotFound(f"repo {repo_name!r} is not registered and {archive} holds entries, not a whole repo",
                               hint=f"create it first with 'ckx add repo:{repo_name}', or unzip into local")
            return _create_repo(ctx, zf, archive, members, repo_name)
        if repo_file is not None:
            name = _repo_name_in(zf, repo_file, archive)
            if not name:
                raise MetaError(f"{archive}: {repo_file.name} names no repo", hint="give one: ckx unzip repo:NAME --zip=...")
            check_name(name, "repo name")
            if name in registry.repos:
                ctx.info(f"repo {name} is already registered; extracting into it")
                return _merge(ctx, zf, archive, members, registry.repos[name], overwrite)
            return _create_repo(ctx, zf, archive, members, name)
        return _merge(ctx, zf, archive, members, registry.get(LOCAL_REPO_NAME), overwrite)


def _move_and_register(ctx: Context, source: Path, target: Path, name: str, fmt: str, desc: dict,
                       url: str | None, *, what: str) -> None:
    """Rename a complete repo directory into place and register it; nothing stays if registering fails."""
    try:
        os.rename(source, target)
    except OSError as exc:
        raise CkxError(f"cannot move {what} to {target}: {exc.strerror}") from None
    repo = Repo(name=name, path=target, format=fmt, uid=desc.get("uid"), url=url,
                deps=tuple(d for d in desc.get("deps", []) if d), exclude_dirs=tuple(desc.get("exclude_dirs", ())))
    try:
        ctx.registry.register(repo)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def _create_repo(ctx: Context, zf: zipfile.ZipFile, archive: Path, members: list[_Member], name: str) -> UnzipResult:
    """Extract a whole-repo archive as a new repo in $CKX_HOME/repos/NAME and register it."""
    home = ctx.home
    home.ensure()
    target = home.repos_dir / name
    if os.path.lexists(target):
        raise CkxError(f"{target} already exists and is not a registered repo",
                       hint=f"move it away, or register it with 'ckx add repo:{name} --path={target}'")
    staging = Path(tempfile.mkdtemp(prefix=".unzip-", dir=home.repos_dir))
    try:
        tree = staging / "repo"
        for member in members:
            _write_member(zf, member, tree.joinpath(*member.parts))
        fmt = detect_format(tree)
        desc = read_repo_description(tree)
        plans, _, _ = _plan_entries(zf, archive, members, Repo(name=name, path=target, format=fmt), lenient=True)
        for plan in plans:  # a whole repo is extracted as it is: entries stay where the archive has them
            plan.dest = target.joinpath(*plan.source_dir)
        clashes = _uid_clashes(ctx, plans)
        os.chmod(tree, 0o755)
        _move_and_register(ctx, tree, target, name, fmt, desc, desc.get("url"), what="the extracted repo")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ctx.forget_registry()
    for clash in clashes:
        ctx.warn(clash)
    return UnzipResult(name, True, tuple(p.label for p in plans), (), (), len(members), tuple(clashes))


def _merge(ctx: Context, zf: zipfile.ZipFile, archive: Path, members: list[_Member], repo: Repo,
           overwrite: bool) -> UnzipResult:
    """Extract entries into an existing native repo: new ones staged and renamed in, existing ones
    skipped (or, with ``overwrite``, their files replaced one by one)."""
    if not repo.writable:
        raise UsageError(f"repo {repo.name!r} is in CK's format, which ckx reads but does not write",
                         hint="unzip into a native repo (the default, local, or one made with 'ckx add repo:NAME')")
    plans, others, unused = _plan_entries(zf, archive, members, repo)
    # Every check before the first write: links on disk on the way to each destination.
    for plan in plans:
        rel = plan.dest.relative_to(repo.path).parts
        for parts in plan.files:
            _check_no_links_on_disk(archive, repo.path, (*rel, *parts))
        plan.exists = os.path.lexists(plan.dest)
    for member in others:
        _check_no_links_on_disk(archive, repo.path, member.parts)
    labels = [p.label for p in plans]
    if len(set(labels)) != len(labels) or len({p.dest for p in plans}) != len(plans):
        raise UsageError(f"{archive} holds the same entry twice (in CK and native layout?)")
    clashes = _uid_clashes(ctx, plans)
    extracted, overwritten, skipped = [], [], []
    files = 0
    for plan in plans:
        if not plan.exists:
            files += _write_new_entry(zf, plan)
            extracted.append(plan.label)
        elif overwrite:
            if not plan.dest.is_dir() or plan.dest.is_symlink():
                raise CkxError(f"cannot overwrite {plan.dest}: it is not a directory")
            for parts, source in plan.files.items():
                _write_member(zf, source, plan.dest.joinpath(*parts))
                files += 1
            overwritten.append(plan.label)
        else:
            skipped.append(plan.label)
    for member in others:
        path = repo.path.joinpath(*member.parts)
        if os.path.lexists(path) and not overwrite:
            skipped.append(member.name)
            continue
        _write_member(zf, member, path)
        files += 1
    ctx.index.refresh(force=True)
    for clash in clashes:
        ctx.warn(clash)
    if unused:
        log.debug("not written from %s: %s", archive, ", ".join(unused))
    return UnzipResult(repo.name, False, tuple(extracted), tuple(overwritten), tuple(skipped), files, tuple(clashes))


def _download_archive(ctx: Context, url: str, workdir: Path) -> Path:
    from ckx.transfer.fetch import fetch, filename_from_url, load_url_map

    try:
        filename = filename_from_url(url)
    except MetaError:
        filename = "archive.zip"
    return fetch(url, workdir / filename, reporter=ctx.reporter, url_map=load_url_map(ctx.home))


def action_unzip(ctx: Context, inp: dict) -> dict:
    """``ckx unzip repo[:NAME] --zip=FILE|URL [--overwrite]``: check, then extract, an archive of entries or of a repo."""
    source = inp.get("zip") or inp.get("archive")
    if not source or not isinstance(source, str):
        raise UsageError("'unzip' needs --zip=FILE or --zip=URL", hint="usage: ckx unzip repo[:NAME] --zip=FILE|URL [--overwrite]")
    repo_name = inp.get("entry")
    overwrite = as_bool(inp.get("overwrite"), "overwrite")
    with contextlib.ExitStack() as stack:
        if source.startswith(("http://", "https://")):
            ctx.home.cache.mkdir(parents=True, exist_ok=True)
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="unzip-", dir=ctx.home.cache)))
            archive = _download_archive(ctx, source, workdir)
        else:
            archive = Path(source.removeprefix("file://")).expanduser()
        result = unzip_archive(ctx, archive, repo_name=repo_name, overwrite=overwrite)
    lines = [f"{'created and registered repo' if result.created else 'unzipped into repo'} {result.repo}: "
             f"{len(result.extracted)} entries extracted, {result.files} files written"]
    if result.overwritten:
        lines.append("overwritten: " + ", ".join(result.overwritten))
    if result.skipped:
        lines.append("skipped (already there; --overwrite replaces them): " + ", ".join(result.skipped))
    return {"return": 0, **result.to_dict(), "archive": source, "text": "\n".join(lines)}


# =========================================================================== input coercion


def _positive_float(value: Any, name: str, default: float) -> float:
    if value is None or value is True:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"--{name} must be a number of seconds, not {value!r}") from None
    if number <= 0:
        raise UsageError(f"--{name} must be positive")
    return number


__all__ = [
    "CatalogEntry", "GitError", "PullOutcome", "UnzipResult", "ZipResult", "action_pull", "action_unzip",
    "action_zip", "catalog_path", "check_zip_members", "declared_deps", "load_catalog", "pull_repo",
    "unzip_archive", "url_for_alias", "zip_entries", "zip_repo",
]
