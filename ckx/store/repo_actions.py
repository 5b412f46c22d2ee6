"""Actions on repos themselves: add, list and remove registrations."""
from __future__ import annotations

from pathlib import Path

from ckx.core.cid import check_name, new_uid
from ckx.store.context import Context
from ckx.core.errors import UsageError
from ckx.store.generic import confirm_deletion, delete_tree
from ckx.store.repo import NATIVE_REPO_FILE, Repo, detect_format, init_native_repo, read_repo_description


def add_repo(ctx: Context, inp: dict) -> dict:
    """Register a repo: an existing directory (native or CK format), or a new native one.

    ``ckx add repo:NAME [--path=DIR] [--url=URL]``; without --path the repo is made in $CKX_HOME/repos/NAME.
    """
    name = inp.get("entry")
    if not name:
        raise UsageError("'add repo' needs a name", hint="usage: ckx add repo:NAME [--path=DIR]")
    check_name(name, "repo name")
    if name in ctx.registry.repos:
        raise UsageError(f"repo {name!r} is already registered at {ctx.registry.repos[name].path}")
    path = Path(inp["path"]).expanduser().resolve() if inp.get("path") else ctx.home.repos_dir / name
    created = False
    if path.exists() and any(path.iterdir()):
        fmt = detect_format(path)
    else:
        init_native_repo(path, name, new_uid(), inp.get("url"))
        fmt, created = "ckx", True
    desc = read_repo_description(path)
    repo = Repo(name=name, path=path, format=fmt, uid=desc.get("uid"), url=inp.get("url") or desc.get("url"),
                deps=tuple(d for d in desc.get("deps", []) if d), exclude_dirs=tuple(desc.get("exclude_dirs", ())), origin="user")
    ctx.registry.register(repo)
    ctx.forget_registry()
    text = f"{'created and ' if created else ''}registered repo {name} ({fmt}) at {path}"
    return {"return": 0, "repo": repo.to_dict(), "created": created, "text": text}


def list_repos(ctx: Context, inp: dict) -> dict:
    """Every registered repo with its format and path."""
    repos = [repo.to_dict() for repo in ctx.registry]
    rows = [[r["name"], r["format"], r["origin"], r["path"], r.get("url", "")] for r in repos]
    columns = ["name", "format", "origin", "path", "url"]
    return {"return": 0, "repos": repos, "table": {"columns": columns, "rows": rows}}


def rm_repo(ctx: Context, inp: dict) -> dict:
    """Unregister a repo; ``--all`` also deletes its directory (asks, or needs --force)."""
    name = inp.get("entry")
    if not name:
        raise UsageError("'rm repo' needs a name", hint="usage: ckx rm repo:NAME [--all] [--force]")
    repo = ctx.registry.get(name)
    if repo.builtin:
        raise UsageError("the built-in repo cannot be removed")
    delete_files = bool(inp.get("all"))
    if delete_files:
        confirm_deletion(ctx, inp, [f"repo {repo.name} and all files under {repo.path}"])
    ctx.registry.unregister(repo.name)
    if delete_files and repo.path.exists():
        if not (repo.path / NATIVE_REPO_FILE).is_file() and detect_format(repo.path) != "ck":
            raise UsageError(f"{repo.path} does not look like a repo; its files were left in place")
        delete_tree(repo.path)
    ctx.forget_registry()
    text = f"removed repo {repo.name}" + (f" and deleted {repo.path}" if delete_files else f" (files kept at {repo.path})")
    return {"return": 0, "repo": repo.to_dict(), "deleted_files": delete_files, "text": text}
