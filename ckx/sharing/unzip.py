"""`ckx unzip`: check every member of an archive, then extract its entries into a repo, or it as a new repo.

Archives hold paths relative to the repo root, as CK's ``ckr.zip`` does. Extraction checks every
member before anything is written, with the checker package unpacking uses (ckx.transfer.safety):
absolute names, drive letters, backslashes, ``..`` components, links (zip members with a symlink
mode), special files, duplicates and members that would be written through a symlink already on
disk are refused (UnsafeArchive, exit 5), and so are ``.git`` components. Existing entries are
skipped unless ``--overwrite``; CK-layout entries unzipped into a native repo are converted to
the native layout (``.cm/meta.json`` -> ``meta.json`` with uid, alias and tags).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import yaml

from ckx.core.cid import check_name, is_uid, new_uid
from ckx.core.errors import CkxError, DownloadError, IntegrityError, MetaError, NotFound, UsageError
from ckx.core.home import LOCAL_REPO_NAME
from ckx.sharing.placement import REPO_FILES, move_and_register
from ckx.sharing.zip import DEFAULT_ARCHIVE
from ckx.store.context import Context
from ckx.store.entry import META_SCHEMA_VERSION, normalise_tags
from ckx.store.index import Query
from ckx.store.repo import DIR_KINDS, META_NAMES, NATIVE_REPO_FILE, Repo, detect_format, read_repo_description
from ckx.transfer.fetch import fetch, filename_from_url, load_url_map, offline_from_env
from ckx.transfer.safety import ArchiveChecker

log = logging.getLogger(__name__)


# =========================================================================== unzip: checking


@dataclass(frozen=True)
class _Member:
    """An archive file that passed every check: its path parts below the repo root."""

    parts: tuple[str, ...]
    info: zipfile.ZipInfo

    @property
    def name(self) -> str:
        return "/".join(self.parts)


def check_zip_members(archive: Path, zf: zipfile.ZipFile) -> list[_Member]:
    """Every file member of ``zf``, checked by ckx.transfer.safety's ArchiveChecker (the checker package
    unpacking uses), sorted by path. A repo archive may not write into a ``.git`` directory either.

    Raises UnsafeArchive for a refused member, IntegrityError for an encrypted one. Directory members
    are checked and dropped.
    """
    checker = ArchiveChecker(archive, verb="unzip")
    files = []
    for planned in checker.check(checker.zip_members(zf), unique=True):
        if any(p.lower() == ".git" for p in planned.parts):
            raise checker.refuse(planned.entry.name, "would write into a .git directory")
        if planned.entry.kind == "file":
            files.append(_Member(planned.parts, planned.entry.ref))  # type: ignore[arg-type]
    return sorted(files, key=lambda member: member.parts)


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
        move_and_register(ctx, tree, target, name, fmt, desc, desc.get("url"), what="the extracted repo")
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
    try:
        filename = filename_from_url(url)
    except MetaError:
        filename = "archive.zip"
    return fetch(url, workdir / filename, reporter=ctx.reporter, url_map=load_url_map(ctx.home))


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
    """``ckx unzip repo[:NAME] [--zip=FILE|URL] [--overwrite]``: check, then extract, an archive of entries or
    of a repo; without --zip, ``./ckr.zip`` as CK reads. Under --offline (or CKX_OFFLINE=1) a URL is refused."""
    source = inp.get("zip") or _default_archive()
    repo_name = inp.get("entry")
    overwrite = bool(inp.get("overwrite"))
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
        result = unzip_archive(ctx, archive, repo_name=repo_name, overwrite=overwrite)
    lines = [f"{'created and registered repo' if result.created else 'unzipped into repo'} {result.repo}: "
             f"{len(result.extracted)} entries extracted, {result.files} files written"]
    if result.overwritten:
        lines.append("overwritten: " + ", ".join(result.overwritten))
    if result.skipped:
        lines.append("skipped (already there; --overwrite replaces them): " + ", ".join(result.skipped))
    return {"return": 0, **result.to_dict(), "archive": source, "text": "\n".join(lines)}


__all__ = ["UnzipResult", "action_unzip", "check_zip_members", "unzip_archive"]
