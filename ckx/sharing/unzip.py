"""`ckx unzip`: check every member of an archive, then extract its entries into a repo, or it as a new repo.

Archives hold paths relative to the repo root, as CK's ``ckr.zip`` does. Before anything is written,
every member's name is checked (ckx.transfer.safety, see ckx.sharing.unzip_checks), the archive's
expansion is bounded (member count, bytes, ratio), and, for a repo that exists already, entries that
carry code need ``--allow_code``. The whole result is then extracted into a staging directory beside
its destination, which reads every member to its end (a bad CRC stops everything there), and only then
renamed into place; a failed move puts back what was moved. Unzip writes only into a repo the user
named (``unzip repo:NAME``) or one it creates, local for an archive of entries, and never into the
built-in repo. Existing entries are skipped unless ``--overwrite``; CK-layout entries unzipped into a
native repo are converted to the native layout (``.cm/meta.json`` -> ``meta.json`` with uid, alias, tags).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ckx.core.cid import check_name, is_uid, new_uid
from ckx.core.errors import CkxError, DownloadError, IntegrityError, MetaError, NotFound, UsageError
from ckx.core.home import BUILTIN_REPO_NAME, LOCAL_REPO_NAME
from ckx.core.limits import Limits
from ckx.sharing.placement import REPO_FILES, move_and_register
from ckx.sharing.staging import Mover, staging_dir
from ckx.sharing.unzip_checks import (Member, check_zip_members, code_reasons, is_code_file,
                                      read_chunks, read_member, read_member_meta)
from ckx.sharing.zip import DEFAULT_ARCHIVE
from ckx.store.context import Context
from ckx.store.entry import META_SCHEMA_VERSION, mark_foreign, normalise_tags
from ckx.store.index import Query
from ckx.store.repo import DIR_KINDS, META_NAMES, NATIVE_REPO_FILE, Repo, detect_format, read_repo_description
from ckx.transfer.fetch import fetch, filename_from_url, load_url_map, offline_from_env
from ckx.transfer.safety import ArchiveChecker

log = logging.getLogger(__name__)


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
    files: dict[tuple[str, ...], Member | bytes] = field(default_factory=dict)  # relative to the entry dir
    exists: bool = False
    meta: dict | None = None

    @property
    def label(self) -> str:
        return f"{self.module}:{self.name}"


@dataclass(frozen=True)
class UnzipResult:
    """What unzip_archive did. ``written`` and ``replaced`` are files relative to the repo root."""

    repo: str
    created: bool
    extracted: tuple[str, ...]
    overwritten: tuple[str, ...]
    skipped: tuple[str, ...]
    files: int
    clashes: tuple[str, ...]
    written: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"repo": self.repo, "created": self.created, "extracted": list(self.extracted),
                "overwritten": list(self.overwritten), "skipped": list(self.skipped), "files": self.files,
                "clashes": list(self.clashes), "written": list(self.written), "replaced": list(self.replaced)}


def _archive_repo_file(members: list[Member]) -> Member | None:
    for member in members:
        if len(member.parts) == 1 and member.parts[0] in REPO_FILES:
            return member
    return None


def _repo_name_in(zf: zipfile.ZipFile, member: Member, archive: Path, limits: Limits) -> str | None:
    data = read_member_meta(zf, archive, member, limits)
    if member.parts[0] == NATIVE_REPO_FILE:
        name = data.get("name")
    else:
        name = data.get("data_uoa") or data.get("data_alias")
    return name if isinstance(name, str) and name else None


def _plan_entries(zf: zipfile.ZipFile, archive: Path, members: list[Member], repo: Repo, limits: Limits, *,
                  lenient: bool = False) -> tuple[list[_EntryPlan], list[Member], list[str]]:
    """Split the archive into entries (converted to ``repo``'s layout) and other files.

    Returns (entries, other files, names of files deliberately not written). An unreadable meta
    raises MetaError, or with ``lenient`` leaves that entry's files among the other files.
    """
    by_dir: dict[tuple[str, str], list[Member]] = {}
    others: list[Member] = []
    ck_alias: dict[tuple[str, ...], str] = {}
    unused: list[str] = []
    for member in members:
        parts = member.parts
        if len(parts) == 1 and parts[0] in REPO_FILES:
            unused.append(member.name)
        elif parts[0] == ".cm" or (len(parts) >= 2 and parts[1] == ".cm"):
            # CK alias files: read for ids, written only when the target is itself CK-format (never, here).
            if len(parts) == 3 and parts[1] == ".cm":
                text = read_member(zf, archive, member, max_bytes=limits.meta_max_bytes)
                ck_alias[parts] = text.decode("utf-8", "replace").strip()
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
                plans.append(_plan_ck_entry(zf, archive, repo, module_dir, dirname, inner, ck_meta, ck_alias, limits))
                continue
            if native_meta is not None:
                module = DIR_KINDS.get(module_dir, module_dir)
                meta = read_member_meta(zf, archive, native_meta, limits)
                uid = meta.get("uid") if isinstance(meta.get("uid"), str) else (dirname if is_uid(dirname) else None)
                alias = meta.get("alias") if isinstance(meta.get("alias"), str) else None
                plans.append(_EntryPlan(module, alias or dirname, uid, "ckx", (module_dir, dirname),
                                        repo.module_dir(module) / dirname, dict(inner), meta=meta))
                continue
        except (MetaError, UsageError):
            if not lenient:
                raise
        others.extend(items)
    return plans, others, unused


def _plan_ck_entry(zf: zipfile.ZipFile, archive: Path, repo: Repo, module: str, dirname: str,
                   inner: dict[tuple[str, ...], Member], ck_meta: Member, ck_alias: dict[tuple[str, ...], str],
                   limits: Limits) -> _EntryPlan:
    """A CK-layout entry for a native repo: ``.cm/meta.json`` becomes ``meta.json`` with uid, alias, tags."""
    meta = read_member_meta(zf, archive, ck_meta, limits)
    if is_uid(dirname):
        uid, alias = dirname, ck_alias.get((module, ".cm", f"alias-u-{dirname}"))
    else:
        uid, alias = ck_alias.get((module, ".cm", f"alias-a-{dirname}")), dirname
        info = inner.get((".cm", "info.json"))
        if not (uid and is_uid(uid)) and info is not None:
            uid = read_member_meta(zf, archive, info, limits).get("backup_data_uid")
    uid = uid if isinstance(uid, str) and is_uid(uid) else new_uid()
    if alias is not None:
        check_name(alias, "alias")
    meta = dict(meta)
    meta.update({"uid": uid, "alias": alias, "tags": normalise_tags(meta.get("tags"))})
    meta.setdefault("schema_version", META_SCHEMA_VERSION)
    files: dict[tuple[str, ...], Member | bytes] = {p: m for p, m in inner.items() if p[0] != ".cm"}
    files[("meta.json",)] = (json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    return _EntryPlan(module, alias or uid, uid, "ck", (module, dirname), repo.module_dir(module) / (alias or uid),
                      files, meta=meta)


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


def _extract(zf: zipfile.ZipFile, archive: Path, source: Member | bytes, path: Path) -> None:
    """Write one file into a staging directory, reading its member to the end (its CRC checked)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "xb") as out:
            if isinstance(source, bytes):
                out.write(source)
            else:
                for chunk in read_chunks(zf, archive, source):
                    out.write(chunk)
    except OSError as exc:
        raise CkxError(f"cannot extract {archive} into {path.parent}: {exc.strerror or exc}; nothing was extracted") from None
    mode = 0o644
    if isinstance(source, Member) and source.info.create_system == 3:
        mode = ((source.info.external_attr >> 16) & 0o755) | 0o644
    os.chmod(path, mode)
    if isinstance(source, Member):
        when = _dt.datetime(*source.info.date_time).timestamp()
        os.utime(path, (when, when))


def _reserved(name: str) -> bool:
    return name in (BUILTIN_REPO_NAME, LOCAL_REPO_NAME)


def unzip_archive(ctx: Context, archive: Path, *, repo_name: str | None = None, overwrite: bool = False,
                  allow_code: bool = False) -> UnzipResult:
    """Extract a ckx/CK zip into a repo after checking every member.

    Into ``repo_name`` (registered: its entries are merged in; else a whole-repo archive becomes that
    new repo) or, without it, a whole-repo archive becomes the new repo its own repo file names (an
    error when that name is taken: unzip merges only into a repo the user names) and an archive of
    entries goes into ``local``. Entries already there are skipped unless ``overwrite``; entries
    that carry code need ``allow_code`` to go into an existing repo. Nothing is ever written into
    the built-in repo. Raises UnsafeArchive (exit 5, nothing written) for a refused member or an
    archive over the expansion limits, IntegrityError for a file that is not a zip or a damaged
    member (nothing written), NotFound for an unknown repo_name with an archive of entries only,
    UsageError for a refused target or code without ``allow_code``.
    """
    if not archive.is_file():
        raise NotFound(f"archive {archive} does not exist")
    limits = Limits.from_settings(ctx.home.settings_path)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise IntegrityError(f"{archive} is not a zip archive ({exc})") from None
    with zf:
        members = check_zip_members(archive, zf, limits)
        if not members:
            raise UsageError(f"{archive} holds no files")
        repo_file = _archive_repo_file(members)
        registry = ctx.registry
        if repo_name and repo_name in registry.repos:
            return _merge(ctx, zf, archive, members, registry.repos[repo_name], overwrite, allow_code, limits)
        if repo_name:
            check_name(repo_name, "repo name")
            if repo_file is None:
                raise NotFound(f"repo {repo_name!r} is not registered and {archive} holds entries, not a whole repo",
                               hint=f"create it first with 'ckx add repo:{repo_name}', or unzip into local")
            return _create_repo(ctx, zf, archive, members, repo_name)
        if repo_file is not None:
            name = _repo_name_in(zf, repo_file, archive, limits)
            if not name:
                raise MetaError(f"{archive}: {repo_file.name} names no repo", hint="give one: ckx unzip repo:NAME --zip=...")
            check_name(name, "repo name")
            if name in registry.repos or _reserved(name):
                existing = registry.repos.get(name)
                where = f" (at {existing.path})" if existing else ""
                merge = "" if existing is None or existing.builtin else f"'ckx unzip repo:{name} --zip={archive}' merges it in, "
                raise UsageError(
                    f"{archive} holds a repo called {name!r}, which is {'reserved' if existing is None else 'already registered'}"
                    f"{where}; unzip does not merge an archive into a repo you did not name",
                    hint=f"{merge}or 'ckx unzip repo:NEW_NAME --zip={archive}' makes it a new repo of its own")
            return _create_repo(ctx, zf, archive, members, name)
        return _merge(ctx, zf, archive, members, registry.get(LOCAL_REPO_NAME), overwrite, allow_code, limits)


def _create_repo(ctx: Context, zf: zipfile.ZipFile, archive: Path, members: list[Member], name: str) -> UnzipResult:
    """Extract a whole-repo archive as a new repo in $CKX_HOME/repos/NAME and register it."""
    if _reserved(name):
        raise UsageError(f"{name!r} names a repo every ckx home has; a repo from an archive needs another name",
                         hint=f"ckx unzip repo:NEW_NAME --zip={archive}")
    home = ctx.home
    home.ensure()
    target = home.repos_dir / name
    if os.path.lexists(target):
        raise CkxError(f"{target} already exists and is not a registered repo",
                       hint=f"move it away, or register it with 'ckx add repo:{name} --path={target}'")
    limits = Limits.from_settings(home.settings_path)
    with staging_dir(home.repos_dir, "unzip", info=ctx.info) as staging:
        tree = staging / "repo"
        for member in members:
            _extract(zf, archive, member, tree.joinpath(*member.parts))
        fmt = detect_format(tree)
        desc = read_repo_description(tree)
        plans, _, _ = _plan_entries(zf, archive, members, Repo(name=name, path=target, format=fmt), limits, lenient=True)
        for plan in plans:  # a whole repo is extracted as it is: entries stay where the archive has them
            plan.dest = target.joinpath(*plan.source_dir)
        clashes = _uid_clashes(ctx, plans)
        os.chmod(tree, 0o755)
        move_and_register(ctx, tree, target, name, fmt, desc, desc.get("url"), what="the extracted repo", origin="unzipped")
    ctx.forget_registry()
    for clash in clashes:
        ctx.warn(clash)
    written = tuple(member.name for member in members)
    return UnzipResult(name, True, tuple(p.label for p in plans), (), (), len(members), tuple(clashes), written)


def _code_carriers(plans: list[_EntryPlan], others: list[Member]) -> list[str]:
    """The entries (and loose files) about to be written that carry code, each with why."""
    found = []
    for plan in plans:
        reasons = code_reasons(plan.module, plan.meta, plan.files)
        if reasons:
            found.append(f"{plan.label} ({'; '.join(reasons)})")
    found += [f"{member.name} (a script)" for member in others if is_code_file(member.parts)]
    return found


def _mark_unzipped(plan: _EntryPlan, archive: Path) -> None:
    """Give an entry merged into an existing repo a provenance mark, so it never outranks the built-in
    and the user's own entries (whatever the archive says of itself); its meta is written as meta.json."""
    if plan.meta is None:
        return
    meta = mark_foreign(dict(plan.meta), "unzipped", archive.name)
    for name in META_NAMES:
        plan.files.pop((name,), None)
    plan.files[("meta.json",)] = (json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    plan.meta = meta


def _merge(ctx: Context, zf: zipfile.ZipFile, archive: Path, members: list[Member], repo: Repo,
           overwrite: bool, allow_code: bool, limits: Limits) -> UnzipResult:
    """Extract entries into an existing native repo: everything staged first, then moved in at once.

    New entries are renamed in whole; existing ones are skipped (or, with ``overwrite``, their files
    replaced). Entries that carry code need ``allow_code``.
    """
    if repo.builtin:
        raise UsageError(f"unzip never writes into the built-in repo {repo.name!r} ({repo.path}): it is the ckx "
                         "installation itself", hint="unzip into local (the default) or into a repo of your own")
    if not repo.writable:
        raise UsageError(repo.read_only_reason() or f"repo {repo.name!r} is read-only",
                         hint="unzip into a native repo (the default, local, or one made with 'ckx add repo:NAME')")
    plans, others, unused = _plan_entries(zf, archive, members, repo, limits)
    for plan in plans:
        _mark_unzipped(plan, archive)
    # Every check before the first write: links on disk on the way to each destination.
    checker = ArchiveChecker(archive, verb="unzip")
    for plan in plans:
        rel = plan.dest.relative_to(repo.path).parts
        for parts in plan.files:
            checker.no_links_on_disk(repo.path, (*rel, *parts))
        plan.exists = os.path.lexists(plan.dest)
    for member in others:
        checker.no_links_on_disk(repo.path, member.parts)
    labels = [p.label for p in plans]
    if len(set(labels)) != len(labels) or len({p.dest for p in plans}) != len(plans):
        raise UsageError(f"{archive} holds the same entry twice (in CK and native layout?)")
    new = [p for p in plans if not p.exists]
    replace = [p for p in plans if p.exists and overwrite]
    skipped = [p.label for p in plans if p.exists and not overwrite]
    loose = [m for m in others if overwrite or not os.path.lexists(repo.path.joinpath(*m.parts))]
    skipped += [m.name for m in others if m not in loose]
    for plan in replace:
        if not plan.dest.is_dir() or plan.dest.is_symlink():
            raise CkxError(f"cannot overwrite {plan.dest}: it is not a directory")
        for parts in plan.files:
            path = plan.dest.joinpath(*parts)
            if path.is_dir() and not path.is_symlink():
                raise CkxError(f"cannot overwrite {path} with a file from {archive}: it is a directory")
    if not allow_code:
        carriers = _code_carriers(new + replace, loose)
        if carriers:
            raise UsageError(
                f"{archive} carries code that ckx could run; nothing was unzipped into repo {repo.name}. "
                "Entries and files with code: " + ", ".join(carriers),
                hint="read them first; add --allow_code to unzip them anyway, or leave them out of the archive")
    clashes = _uid_clashes(ctx, plans)
    written: list[str] = []
    replaced: list[str] = []

    def rel(path: Path) -> str:
        return path.relative_to(repo.path).as_posix()

    if new or replace or loose:
        with staging_dir(repo.path, "unzip", info=ctx.info) as staging:
            moves: list[tuple[Path, Path]] = []
            for number, plan in enumerate(new):
                staged = staging / "new" / str(number)
                for parts, source in plan.files.items():
                    _extract(zf, archive, source, staged.joinpath(*parts))
                    written.append(rel(plan.dest.joinpath(*parts)))
                os.chmod(staged, 0o755)
                moves.append((staged, plan.dest))
            files = [(plan.dest.joinpath(*parts), source) for plan in replace for parts, source in plan.files.items()]
            files += [(repo.path.joinpath(*m.parts), m) for m in loose]
            for number, (dest, source) in enumerate(files):
                staged = staging / "files" / str(number) / dest.name
                _extract(zf, archive, source, staged)
                (replaced if os.path.lexists(dest) else written).append(rel(dest))
                moves.append((staged, dest))
            mover = Mover(staging / "backup")
            try:
                for source_path, dest in moves:
                    mover.move(source_path, dest)
            except BaseException as exc:
                mover.rollback()
                if isinstance(exc, OSError):
                    raise CkxError(f"cannot move the files of {archive} into {repo.path}: {exc.strerror or exc}; "
                                   "nothing was changed") from None
                raise
        ctx.index.refresh(force=True)
    for clash in clashes:
        ctx.warn(clash)
    if unused:
        log.debug("not written from %s: %s", archive, ", ".join(unused))
    return UnzipResult(repo.name, False, tuple(p.label for p in new), tuple(p.label for p in replace), tuple(skipped),
                       len(written) + len(replaced), tuple(clashes), tuple(sorted(written)), tuple(sorted(replaced)))


def _download_archive(ctx: Context, url: str, workdir: Path) -> Path:
    try:
        filename = filename_from_url(url)
    except MetaError:
        filename = "archive.zip"
    limits = Limits.from_settings(ctx.home.settings_path)
    return fetch(url, workdir / filename, reporter=ctx.reporter, url_map=load_url_map(ctx.home),
                 max_bytes=min(limits.download_max_bytes, limits.archive_max_bytes))


def _file_lines(title: str, names: tuple[str, ...]) -> list[str]:
    return [f"{title}:", *(f"  {name}" for name in names)] if names else []


def _default_archive() -> str:
    """``./ckr.zip``, CK's default; NotFound naming the ``ckr-*.zip`` files here when it is missing."""
    here = Path.cwd()
    if (here / DEFAULT_ARCHIVE).is_file():
        return str(here / DEFAULT_ARCHIVE)
    others = sorted(p.name for p in here.glob("ckr*.zip") if p.is_file())
    raise NotFound(f"no --zip given and no {DEFAULT_ARCHIVE} in {here}",
                   hint=("name the archive: " + ", ".join(f"ckx unzip repo --zip={n}" for n in others[:3])) if others
                   else "usage: ckx unzip repo[:NAME] [--zip=FILE|URL] [--overwrite] (default ./ckr.zip)")


def action_unzip(ctx: Context, inp: dict) -> dict:
    """``ckx unzip repo[:NAME] [--zip=FILE|URL] [--overwrite] [--allow_code]``: check, then extract, an archive
    of entries or of a repo; without --zip, ``./ckr.zip`` as CK reads. Under --offline (or CKX_OFFLINE=1) a URL
    is refused."""
    source = inp.get("zip") or _default_archive()
    repo_name = inp.get("entry")
    with contextlib.ExitStack() as stack:
        if source.startswith(("http://", "https://")):
            if inp.get("offline") or offline_from_env():
                raise DownloadError(f"offline mode: not downloading {source}",
                                    [f"{source} -> not tried (offline)"],
                                    hint="download the archive by other means and pass it: ckx unzip repo --zip=FILE")
            ctx.home.cache.mkdir(parents=True, exist_ok=True)
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="unzip-", dir=ctx.home.cache)))
            archive = _download_archive(ctx, source, workdir)
        else:
            archive = Path(source.removeprefix("file://")).expanduser()
        result = unzip_archive(ctx, archive, repo_name=repo_name, overwrite=bool(inp.get("overwrite")),
                               allow_code=bool(inp.get("allow_code")))
    lines = [f"{'created and registered repo' if result.created else 'unzipped into repo'} {result.repo}: "
             f"{len(result.extracted)} entries extracted, {len(result.written)} files written, "
             f"{len(result.replaced)} replaced"]
    if result.overwritten:
        lines.append("overwritten: " + ", ".join(result.overwritten))
    if result.skipped:
        lines.append("skipped (already there; --overwrite replaces them): " + ", ".join(result.skipped))
    lines += _file_lines("files written", result.written) + _file_lines("files replaced", result.replaced)
    return {"return": 0, **result.to_dict(), "archive": source, "text": "\n".join(lines)}


__all__ = ["UnzipResult", "action_unzip", "check_zip_members", "unzip_archive"]
