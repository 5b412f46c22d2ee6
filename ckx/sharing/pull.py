"""`ckx pull repo`: clone or fast-forward a repo with git, register it, and pull the repos it declares.

A repo is cloned (``git clone``, argv list, timeout, never prompting) into a staging directory
under ``$CKX_HOME/repos`` and only then renamed into place and registered: a failed clone leaves
nothing behind and registers nothing. A killed pull leaves nothing either that the next pull does not
remove (ckx.sharing.staging), and git dies with the ckx process that started it (on Linux the kernel
kills it when its parent goes, ``PR_SET_PDEATHSIG``). Pulling a registered repo fetches and fast-forwards it; a
repo whose history diverged from its origin is an error. Nothing from the pulled repo runs: git
hooks point at an empty directory (the clone gets no template hooks either) and nothing is
pip-installed. The repos a repo declares (CK: ``.ckr.json`` ``dict.repo_deps``; native:
``ckx-repo.json`` ``deps``) are pulled too, without asking.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ckx.core.cid import check_name
from ckx.core.errors import CkxError, DownloadError, NotFound, UsageError
from ckx.core.jsonio import read_json
from ckx.sharing.catalog import CatalogEntry, load_catalog, url_for_alias
from ckx.sharing.merge import MergeRefused, identity_args as _identity, merge_theirs
from ckx.sharing.placement import move_and_register
from ckx.sharing.staging import staging_dir
from ckx.store.context import Context
from ckx.store.repo import CK_REPO_FILE, NATIVE_REPO_FILE, Registry, Repo, detect_format, read_repo_description
from ckx.transfer.fetch import OFFLINE_ENV, offline_from_env

GIT_TIMEOUT = 900.0  # seconds for one git command (a clone of a large repo on a slow link)
_BRANCH_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./+-]*$")
_SCP_LIKE = re.compile(r"^[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+:[^:]")
_URL_SCHEMES = ("https://", "http://", "ssh://", "git://", "file://")


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


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGKILL when ckx dies (Linux's prctl); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # ckx died before the prctl took hold
            os._exit(1)

    return preexec


@contextlib.contextmanager
def no_hooks(ctx: Context) -> Iterator[Path]:
    """An empty directory: the hooks path and clone template, so no hook of any repo ever runs.

    It lies in a pull staging directory under $CKX_HOME/repos, so a killed pull leaves it to the next one to remove.
    """
    with staging_dir(ctx.home.repos_dir, "pull", info=ctx.info) as staging:
        empty = staging / "nohooks"
        empty.mkdir()
        yield empty


def _git(args: list[str], *, hooks: Path, cwd: Path | None = None, timeout: float = GIT_TIMEOUT,
         check: bool = True, what: str | None = None) -> subprocess.CompletedProcess:
    """Run one git command without hooks or prompts; GitError when it fails (with ``check``) or times out."""
    argv = ["git", "-c", f"core.hooksPath={hooks}", "-c", "protocol.ext.allow=never", *args]
    label = what or "git " + " ".join(args[:2])
    try:
        # setsid: without a controlling terminal neither git nor ssh can open /dev/tty to prompt; and as its
        # own process group, git goes down on a timeout or an exception together with its children
        # (remote-https, ssh). If ckx itself is killed, the kernel kills git (PR_SET_PDEATHSIG), and
        # git's children end as their pipes to it close.
        proc = subprocess.Popen(argv, cwd=cwd, env=_git_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True,
                                preexec_fn=_die_with_parent())
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


def is_local_url(url: str) -> bool:
    """True for a URL git reads from this machine (``file://`` or an absolute path): allowed offline."""
    return url.startswith(("file://", "/"))


def local_ways_forward(name: str | None) -> str:
    """The ways to get a repo without the network, for the hint of a pull that failed or was skipped."""
    alias = name or "NAME"
    return (f"without the network: pull a local clone (ckx pull repo:{alias} --url=file:///path/to/clone), "
            f"register a checkout in place (ckx add repo:{alias} --path=DIR), "
            f"or unzip an archive of it (ckx unzip repo --file=ckr-{alias}.zip)")


# =========================================================================== pull


@dataclass(frozen=True)
class PullOutcome:
    """What a pull did to one repo. ``state``: cloned, updated, merged, up-to-date, ahead, present, skipped or failed."""

    name: str
    state: str  # cloned, updated, up-to-date, ahead, present, skipped (offline) or failed
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
              timeout: float = GIT_TIMEOUT, with_deps: bool = True, offline: bool = False) -> list[PullOutcome]:
    """Clone (or fast-forward) a repo, register it, then pull the repos it declares.

    ``name`` is the alias to register (from the catalog when no ``url`` is given); without it the
    name comes from the repo's own file, then from the URL. Returns the outcome of the asked repo
    first, then of each dependency. A dependency that cannot be pulled is a warning (its outcome
    says "failed"); the asked repo failing raises GitError, UsageError or NotFound and leaves
    nothing registered and nothing under $CKX_HOME/repos.

    ``offline`` (or CKX_OFFLINE=1) contacts no host: a local URL (``file://``, an absolute path) is still
    cloned or fetched; a registered repo with a remote origin is left as it is (state "skipped"); a new
    repo with a remote URL raises DownloadError whose hint names the local ways forward, as every
    failed clone's does.
    """
    offline = offline or offline_from_env()
    if branch is not None and not _BRANCH_RE.match(branch):
        raise UsageError(f"invalid branch name {branch!r}")
    catalog = load_catalog()
    first = _pull_one(ctx, name, url, branch, timeout, catalog, offline)
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
            outcome = _pull_one(ctx, dep, dep_url, None, timeout, catalog, offline)
        except CkxError as exc:
            skipped = offline and isinstance(exc, DownloadError)
            message = exc.message.splitlines()[0]
            ctx.warn(f"dependency {dep} of repo {parent} was not pulled: {message}")
            outcomes.append(PullOutcome(dep, "skipped" if skipped else "failed", url=dep_url, error=message,
                                        dependency_of=parent))
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
              catalog: dict[str, CatalogEntry], offline: bool = False) -> PullOutcome:
    if name:
        check_name(name, "repo name")
        if name in ctx.registry.repos:
            return _update(ctx, ctx.registry.repos[name], url, branch, timeout, offline)
    elif not url:
        raise UsageError("'pull repo' needs a repo alias or --url", hint="usage: ckx pull repo:ALIAS [--url=URL] [--branch=NAME]")
    if url and not name:
        for repo in ctx.registry:
            if repo.url and _same_url(repo.url, url):
                return _update(ctx, repo, url, branch, timeout, offline)
    if not url:
        assert name is not None
        found = url_for_alias(name, catalog)
        if found is None:
            known = sorted({entry.name for entry in catalog.values()})
            raise NotFound(f"no known URL for repo {name!r}",
                           hint="give it with --url=URL; the catalog knows: " + ", ".join(known)
                                + "; " + local_ways_forward(name))
        url, source = found
        ctx.info(f"repo {name}: {url} (from {source})")
    url = _check_url(url)
    if offline and not is_local_url(url):
        raise DownloadError(f"offline mode (--offline or {OFFLINE_ENV}=1): not cloning {url}",
                            [f"{url} -> not contacted (offline)"], hint=local_ways_forward(name or _name_from_url(url)))
    return _clone_and_register(ctx, name, url, branch, timeout)


def _clone_and_register(ctx: Context, name: str | None, url: str, branch: str | None, timeout: float) -> PullOutcome:
    """Clone into a staging directory, rename it into place, register it; nothing is left on failure."""
    home = ctx.home
    home.ensure()
    with staging_dir(home.repos_dir, "pull", info=ctx.info) as staging:
        checkout = staging / "checkout"
        args = ["clone", "--quiet", "--no-recurse-submodules"]
        if branch:
            args += ["--branch", branch]
        with no_hooks(ctx) as hooks:
            ctx.info(f"cloning {url}" + (f" (branch {branch})" if branch else ""))
            try:
                _git([*args, f"--template={hooks}", "--", url, str(checkout)], hooks=hooks, timeout=timeout,
                     what=f"git clone of {url}")
            except GitError as exc:
                exc.hint = "; ".join(filter(None, [exc.hint, local_ways_forward(name or _name_from_url(url))]))
                raise
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
        move_and_register(ctx, checkout, target, repo_name, fmt, desc, url, what=f"the clone of {url}", origin="pulled")
    ctx.forget_registry()
    return PullOutcome(repo_name, "cloned", target, url, fmt, commit)


def _update(ctx: Context, repo: Repo, url: str | None, branch: str | None, timeout: float,
            offline: bool = False) -> PullOutcome:
    """Fetch and fast-forward a registered git checkout; GitError when its history diverged.

    ``offline`` with a remote origin fetches nothing: the outcome is "skipped", and that is said."""
    if not (repo.path / ".git").exists():
        raise UsageError(f"repo {repo.name} at {repo.path} is not a git checkout: there is nothing to pull",
                         hint="repos made with 'ckx add repo' or 'ckx unzip' move with zip/unzip")
    with no_hooks(ctx) as hooks:
        def git(*args: str, **kwargs: Any) -> subprocess.CompletedProcess:
            return _git(list(args), hooks=hooks, cwd=repo.path, timeout=timeout, **kwargs)

        origin = git("remote", "get-url", "origin").stdout.strip()
        if url and not _same_url(url, origin):
            raise UsageError(f"repo {repo.name} was cloned from {origin}, not {url}",
                             hint=f"pull the other URL under another name (ckx pull repo:OTHER --url={url})")
        if offline and not is_local_url(origin):
            commit = git("rev-parse", "--short", "HEAD").stdout.strip()
            ctx.info(f"offline: not fetching {repo.name} from {origin}; it stays at {commit}")
            return PullOutcome(repo.name, "skipped", repo.path, origin, repo.format, commit)
        current = git("rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
        wanted = branch or current
        if wanted == "HEAD":
            raise UsageError(f"repo {repo.name} is not on a branch (detached HEAD)", hint="give one with --branch=NAME")
        ctx.info(f"fetching {repo.name} ({wanted}) from {origin}")
        try:
            git("fetch", "--quiet", "origin", wanted, what=f"git fetch of {origin}")
        except GitError as exc:
            exc.hint = "; ".join(filter(None, [exc.hint, f"the repo stays as it is; 'ckx pull repo:{repo.name} "
                                               "--offline' uses it without fetching", local_ways_forward(repo.name)]))
            raise
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
            # Both sides recorded points: merge theirs point by point (refused if it would overwrite any).
            try:
                merge_theirs(git, repo.path, fetched, message=f"ckx pull: merge the points of {origin} ({wanted})",
                             identity=_identity(git), experiments_only=True)
            except MergeRefused as exc:
                raise GitError(
                    f"repo {repo.name} has diverged from {origin} ({wanted}): both have commits the other lacks, "
                    f"so it cannot be fast-forwarded, and {exc.message}",
                    hint=f"reconcile it with git in {repo.path} (rebase or reset), then pull again",
                ) from None
            state = "merged"
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
    outcomes = pull_repo(ctx, name=inp.get("entry"), url=inp.get("url"), branch=inp.get("branch"),
                         timeout=inp.get("timeout") or GIT_TIMEOUT, with_deps=not inp.get("no_deps"),
                         offline=bool(inp.get("offline")))
    first = outcomes[0]
    lines = [_describe_outcome(first)]
    deps = outcomes[1:]
    if deps:
        lines.append(f"dependencies of {first.name}:")
        lines += [f"  {_describe_outcome(o)}" for o in deps]
    failed = [o.name for o in deps if o.state == "failed"]
    skipped = [o.name for o in outcomes if o.state == "skipped"]
    return {"return": 0, "repo": first.to_dict(), "deps": [o.to_dict() for o in deps], "failed_deps": failed,
            "skipped": skipped, "text": "\n".join(lines)}


def _describe_outcome(outcome: PullOutcome) -> str:
    if outcome.state == "failed":
        return f"{outcome.name}: not pulled ({outcome.error})"
    if outcome.state == "present":
        return f"{outcome.name}: already registered at {outcome.path}"
    if outcome.state == "skipped" and outcome.path is None:
        return f"{outcome.name}: not pulled ({outcome.error})"
    if outcome.state == "skipped":
        return f"{outcome.name}: not fetched (offline), kept at {outcome.commit} ({outcome.format}, {outcome.path})"
    commit = f" at {outcome.commit}" if outcome.commit else ""
    return f"{outcome.name}: {outcome.state}{commit} ({outcome.format}, {outcome.path})"


__all__ = ["GIT_TIMEOUT", "GitError", "PullOutcome", "action_pull", "declared_deps", "is_local_url", "local_ways_forward",
           "pull_repo"]
