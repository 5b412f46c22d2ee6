"""`ckx push repo:NAME`: commit a repo's changes (new points) and push them to its origin, merging theirs first.

Many machines can record into one repo this way: each push commits what this machine recorded, fetches
the branch, merges the other machines' commits point by point (``ckx.sharing.merge``: refused when it
would overwrite someone else's points), and pushes. It never forces a push; when another push lands in
between, it fetches and merges again (a few times).
"""
from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ckx.core.errors import UsageError
from ckx.sharing.merge import MergeRefused, identity_args, merge_theirs
from ckx.sharing.pull import GIT_TIMEOUT, GitError, _git, no_hooks
from ckx.store.context import Context

ATTEMPTS = 3  # fetch, merge and push again when someone else pushed in between


@dataclass(frozen=True)
class PushOutcome:
    """What a push did: the commit it made (if any), what it merged, and what the remote's branch holds now."""

    name: str
    path: Path
    url: str
    branch: str
    state: str  # pushed, up-to-date
    committed: str | None
    merged: tuple[str, ...]
    commit: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "url": self.url, "branch": self.branch,
                "state": self.state, "committed": self.committed, "merged_files": list(self.merged),
                "commit": self.commit}


def push_repo(ctx: Context, name: str, *, message: str | None = None, timeout: float = GIT_TIMEOUT) -> PushOutcome:
    """Commit, merge the origin's branch in and push ``name``; UsageError / GitError / MergeRefused otherwise."""
    repo = ctx.registry.get(name)
    if not (repo.path / ".git").exists():
        raise UsageError(f"repo {repo.name} at {repo.path} is not a git checkout: there is nowhere to push it",
                         hint="pull the shared repo first: ckx pull repo:NAME --url=URL, and record into it")
    with no_hooks(ctx) as hooks:
        def git(*args: str, **kwargs: Any) -> subprocess.CompletedProcess:
            return _git(list(args), hooks=hooks, cwd=repo.path, timeout=timeout, **kwargs)

        url = git("remote", "get-url", "origin", check=False).stdout.strip()
        if not url:
            raise UsageError(f"repo {repo.name} has no remote 'origin' to push to",
                             hint=f"add one: git -C {repo.path} remote add origin URL")
        branch = git("rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
        if branch == "HEAD":
            raise UsageError(f"repo {repo.name} is not on a branch (detached HEAD)",
                             hint=f"check one out: git -C {repo.path} switch BRANCH")
        identity = identity_args(git)
        git("add", "--all")
        committed = None
        staged = git("diff", "--cached", "--name-only", "-z").stdout.split("\0")
        staged = [p for p in staged if p]
        if staged:
            text = message or f"ckx push: {len(staged)} file(s) from {socket.gethostname() or 'a machine'}"
            git(*identity, "commit", "--quiet", "--no-verify", "-m", text, what="git commit")
            committed = git("rev-parse", "--short", "HEAD").stdout.strip()
            ctx.info(f"committed {len(staged)} file(s) in {repo.name} as {committed}")
        merged: list[str] = []
        state = "up-to-date"
        for attempt in range(1, ATTEMPTS + 1):
            remote = git("ls-remote", "--heads", "origin", branch, what=f"git ls-remote of {url}").stdout.strip()
            if remote:
                git("fetch", "--quiet", "origin", branch, what=f"git fetch of {url}")
                theirs = git("rev-parse", "FETCH_HEAD").stdout.strip()
                head = git("rev-parse", "HEAD").stdout.strip()
                if head == theirs or _ancestor(git, head, theirs):
                    if head != theirs:
                        git("merge", "--ff-only", "--quiet", theirs, what="a fast-forward")
                        ctx.info(f"{repo.name}: nothing of ours to push; fast-forwarded to {url}")
                    break
                if not _ancestor(git, theirs, head):
                    ctx.info(f"{repo.name}: {url} has commits we lack; merging them point by point")
                    outcome = merge_theirs(git, repo.path, theirs, identity=identity,
                                           message=f"ckx push: merge the points of {url} ({branch})")
                    merged += [p for p in outcome.taken if p not in merged]
            proc = git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", check=False)
            if proc.returncode == 0:
                state = "pushed"
                break
            rejected = "rejected" in proc.stderr or "non-fast-forward" in proc.stderr or "fetch first" in proc.stderr
            if not rejected or attempt == ATTEMPTS:
                lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
                raise GitError(f"git push to {url} failed (exit {proc.returncode}): {'; '.join(lines[-3:])}",
                               hint="check that the remote is writable and reachable, then push again")
            ctx.info(f"{repo.name}: someone pushed in between; fetching and merging again")
        commit = git("rev-parse", "--short", "HEAD").stdout.strip()
    ctx.forget_registry()
    ctx.index.refresh(force=True)
    return PushOutcome(repo.name, repo.path, url, branch, state, committed, tuple(merged), commit)


def _ancestor(git: Any, first: str, second: str) -> bool:
    proc = git("merge-base", "--is-ancestor", first, second, check=False)
    if proc.returncode not in (0, 1):
        raise GitError(f"git merge-base failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc.returncode == 0


def action_push(ctx: Context, inp: dict) -> dict:
    """``ckx push repo:NAME [--message=TEXT]``: commit what was recorded, merge the remote's points, push."""
    name = inp.get("entry")
    if not name:
        raise UsageError("'push' needs a repo", hint="usage: ckx push repo:NAME")
    outcome = push_repo(ctx, name, message=inp.get("message"), timeout=inp.get("timeout") or GIT_TIMEOUT)
    parts = [f"{outcome.name}: {outcome.state} to {outcome.url} ({outcome.branch}) at {outcome.commit}"]
    if outcome.committed:
        parts.append(f"committed {outcome.committed}")
    if outcome.merged:
        parts.append(f"merged {len(outcome.merged)} file(s) of others")
    return {"return": 0, "repo": outcome.to_dict(), "text": "; ".join(parts)}


__all__ = ["MergeRefused", "PushOutcome", "action_push", "push_repo"]
