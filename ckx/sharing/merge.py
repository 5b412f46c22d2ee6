"""Merging another machine's commits of a repo into ours, point by point, never overwriting either side's points.

Experiments keep one file per point (``experiments/NAME/points/UID.json``, the uid a hash of the choices and
the machine), so two machines recording into one repo mostly add different files. A merge takes every file
only one side changed; where both changed the same file it must be the same content, except an experiment's
``meta.json``, whose point lists are united. Any other file changed differently on both sides (above all a
point both recorded) is refused: nothing is written and ``MergeRefused`` names the files.
"""
from __future__ import annotations

import json
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Sequence

from ckx.core.errors import CkxError
from ckx.core.jsonio import write_json_atomic

Git = Callable[..., subprocess.CompletedProcess]
EXPERIMENTS_DIR = "experiments"
POINTS_DIR = "points"


class MergeRefused(CkxError):
    """Both sides changed the same files differently: merging would overwrite someone else's points."""


@dataclass(frozen=True)
class MergeOutcome:
    """What a merge took from the other side, and which experiment metas it united."""

    commit: str
    taken: tuple[str, ...]
    removed: tuple[str, ...]
    merged_metas: tuple[str, ...]


def identity_args(git: Git) -> list[str]:
    """``-c user.name=... -c user.email=...`` when git has no identity configured, so a commit can be made."""
    email = git("config", "user.email", check=False).stdout.strip()
    name = git("config", "user.name", check=False).stdout.strip()
    if email and name:
        return []
    host = socket.gethostname() or "localhost"
    return ["-c", f"user.name={name or 'ckx on ' + host}", "-c", f"user.email={email or 'ckx@' + host}"]


def _changes(git: Git, base: str, tip: str) -> dict[str, str]:
    """path -> "A"/"M"/"D" between two commits (renames as a deletion and an addition)."""
    out = git("diff", "--name-status", "--no-renames", "-z", base, tip).stdout
    words = [w for w in out.split("\0") if w]
    changes: dict[str, str] = {}
    for status, path in zip(words[::2], words[1::2]):
        changes[path] = status[0]
    return changes


def _blob(git: Git, commit: str, path: str) -> str | None:
    proc = git("rev-parse", "--verify", "--quiet", f"{commit}:{path}", check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def is_experiment_meta(path: str) -> bool:
    """``experiments/NAME/meta.json`` (at the repo's top)."""
    parts = PurePosixPath(path).parts
    return len(parts) == 3 and parts[0] == EXPERIMENTS_DIR and parts[2] == "meta.json"


def is_point_file(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return len(parts) >= 4 and parts[0] == EXPERIMENTS_DIR and parts[2] == POINTS_DIR


def _json_at(git: Git, commit: str, path: str) -> dict:
    proc = git("show", f"{commit}:{path}", check=False)
    if proc.returncode != 0:
        return {}
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def merge_meta(base: dict, ours: dict, theirs: dict, points_dir: Path) -> dict:
    """One experiment meta from both sides': their identity (the first published), both sides' tags, and the
    point summaries of both whose point files are in ``points_dir`` after the merge."""
    merged = dict(ours)
    merged.update(theirs)
    if base.get("uid"):
        merged["uid"] = base["uid"]
    merged["tags"] = list(dict.fromkeys([*(ours.get("tags") or []), *(theirs.get("tags") or [])]))
    summaries: dict[str, Any] = {}
    for item in [*(theirs.get("points") or []), *(ours.get("points") or [])]:
        if isinstance(item, dict) and isinstance(item.get("uid"), str) and item["uid"] not in summaries:
            summaries[item["uid"]] = item
    merged["points"] = [item for uid, item in summaries.items() if (points_dir / f"{uid}.json").is_file()]
    stamps = [m.get("updated") for m in (ours, theirs) if isinstance(m.get("updated"), str)]
    if stamps:
        merged["updated"] = max(stamps)
    versions = [v for v in (ours.get("schema_version"), theirs.get("schema_version")) if isinstance(v, int)]
    if versions:
        merged["schema_version"] = max(versions)
    return merged


def plan_merge(git: Git, theirs: str, *, experiments_only: bool = False) -> tuple[str, list[str], list[str], list[str]]:
    """(merge base, files to take from theirs, files to remove, metas to unite); MergeRefused on a conflict.

    With ``experiments_only`` a change outside ``experiments/`` on either side is refused too.
    """
    base = git("merge-base", "HEAD", theirs).stdout.strip()
    mine = _changes(git, base, "HEAD")
    other = _changes(git, base, theirs)
    if experiments_only:
        outside = sorted(p for p in {*mine, *other} if PurePosixPath(p).parts[0] != EXPERIMENTS_DIR)
        if outside:
            raise MergeRefused(f"only recorded experiments are merged, and {outside[0]} is not one"
                               + (f" (nor {len(outside) - 1} more)" if len(outside) > 1 else ""))
    take, remove, metas, clashes = [], [], [], []
    for path, status in sorted(other.items()):
        if path not in mine:
            (remove if status == "D" else take).append(path)
        elif _blob(git, "HEAD", path) == _blob(git, theirs, path):
            continue
        elif is_experiment_meta(path) and status != "D" and mine[path] != "D":
            metas.append(path)
        else:
            clashes.append(path)
    if clashes:
        points = [p for p in clashes if is_point_file(p)]
        shown = ", ".join((points or clashes)[:5]) + (" ..." if len(clashes) > 5 else "")
        what = "points both sides recorded differently" if points else "files both sides changed differently"
        raise MergeRefused(f"merging would overwrite someone else's work: {len(clashes)} {what}: {shown}",
                           hint="the same choices on the same machine were recorded on both sides; record "
                                "into another experiment (--record_uoa) or reconcile the files with git")
    return base, take, remove, metas


def merge_theirs(git: Git, path: Path, theirs: str, *, message: str, identity: Sequence[str] = (),
                 experiments_only: bool = False) -> MergeOutcome:
    """Merge commit ``theirs`` into HEAD of the checkout at ``path`` point by point; a merge commit results.

    The working tree must be clean (commit first). Raises MergeRefused, before changing anything, when
    both sides changed the same file differently (an experiment's meta.json aside).
    """
    if git("status", "--porcelain").stdout.strip():
        raise MergeRefused(f"{path} has uncommitted changes; they would be mixed into the merge",
                           hint="commit them first ('ckx push repo:NAME' commits and pushes)")
    base, take, remove, metas = plan_merge(git, theirs, experiments_only=experiments_only)
    ours_metas = {p: _json_at(git, "HEAD", p) for p in metas}
    git(*identity, "merge", "--no-ff", "--no-commit", "-s", "ours", theirs, what="git merge")
    for start in range(0, len(take), 200):
        git("checkout", theirs, "--", *take[start:start + 200])
    for start in range(0, len(remove), 200):
        git("rm", "--quiet", "--ignore-unmatch", "--", *remove[start:start + 200])
    for meta_path in metas:
        points_dir = path / PurePosixPath(meta_path).parent / POINTS_DIR
        merged = merge_meta(_json_at(git, base, meta_path), ours_metas[meta_path], _json_at(git, theirs, meta_path),
                            points_dir)
        write_json_atomic(path / meta_path, merged)
        git("add", "--", meta_path)
    git(*identity, "commit", "--quiet", "--no-verify", "-m", message, what="git commit")
    commit = git("rev-parse", "--short", "HEAD").stdout.strip()
    return MergeOutcome(commit, tuple(take), tuple(remove), tuple(metas))


__all__ = ["MergeOutcome", "MergeRefused", "identity_args", "is_experiment_meta", "is_point_file", "merge_meta", "merge_theirs",
           "plan_merge"]
