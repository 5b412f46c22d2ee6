"""`ckx zip`: entries (``ckr.zip``) or a whole repo (``ckr-NAME.zip``) into one archive of paths relative to the repo root."""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ckx.core.cid import Cid, has_wildcard, is_uid
from ckx.core.errors import CkxError, NotFound, UsageError
from ckx.core.jsonio import usual_file_mode
from ckx.sharing.placement import REPO_FILES
from ckx.store.context import Context
from ckx.store.generic import find_entries, resolve_entry
from ckx.store.index import EntryRecord
from ckx.store.repo import CK_REPO_FILE, NATIVE_REPO_FILE, Repo

DEFAULT_ARCHIVE = "ckr.zip"
# Directories never archived: version control, caches, and ckx's own half-written staging areas.
_SKIP_DIRS = {".git", "__pycache__", ".mypy_cache", ".pytest_cache"}
_STAGING_PREFIXES = (".tmp-", ".rm-", ".pull-", ".unzip-")


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
    repo.check_inside(record.path, "entry directory")  # os.walk would follow a linked entry directory out
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


def repo_archive_name(repo: str) -> str:
    """The default archive of ``zip repo:NAME``: ``ckr-NAME.zip``, so it never lands on an entries' ``ckr.zip``."""
    return f"ckr-{repo}.zip"


def _archive_path(inp: dict, repo: str, module: str, *, default: str = DEFAULT_ARCHIVE) -> Path:
    """Where to write: --archive_name, an --auto_name, or ``default``; UsageError for an existing file
    unless --overwrite (a second zip must not silently replace the archive of the first)."""
    if inp.get("archive_name") and inp.get("auto_name"):
        raise UsageError("give either --archive_name or --auto_name, not both")
    if inp.get("auto_name"):
        name = f"ckr-{repo}-{module}-{_stamp()}.zip"
    else:
        name = inp.get("archive_name") or default
    path = Path(name).expanduser()
    if path.is_dir():
        raise UsageError(f"--archive_name={name} is a directory", hint="give a file name, e.g. --archive_name=entries.zip")
    path = path if path.is_absolute() else Path.cwd() / path
    if os.path.lexists(path) and not inp.get("overwrite"):
        raise UsageError(f"{path} already exists: not overwriting it",
                         hint="add --overwrite to replace it, or name another with --archive_name=FILE (or --auto_name)")
    return path


def action_zip(ctx: Context, inp: dict) -> dict:
    """``ckx zip CID [CID ...] [--tags=...] [--archive_name=F] [--auto_name] [--overwrite]`` or ``ckx zip repo:NAME``."""
    cids = _request_cids(inp)
    repos = [cid for cid in cids if cid.module == "repo"]
    if repos:
        if len(cids) > 1 or not repos[0].entry:
            raise UsageError("'zip repo:NAME' archives one whole repo; zip entries in a separate command",
                             hint="usage: ckx zip repo:NAME [--archive_name=F]")
        repo = ctx.registry.get(repos[0].entry)
        archive = _archive_path(inp, repo.name, "repo", default=repo_archive_name(repo.name))
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
                raise NotFound(f"nothing matches {cid}" + (f" with tags {','.join(inp['tags'])}" if inp.get("tags") else ""))
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


__all__ = ["DEFAULT_ARCHIVE", "ZipResult", "action_zip", "repo_archive_name", "zip_entries", "zip_repo"]
