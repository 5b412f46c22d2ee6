"""The generic actions every module has: add load find search list rm ren cp list_tags path."""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any, Iterable

from ckx.core.cid import Cid, check_name, has_wildcard, is_uid, new_uid
from ckx.store.context import Context
from ckx.store.entry import META_SCHEMA_VERSION, deep_merge, foreign_origin, load_meta, normalise_tags, validate_meta
from ckx.core.errors import Ambiguous, CkxError, NotFound, UsageError
from ckx.store.index import EntryRecord, Query, split_tags
from ckx.core.jsonio import write_meta_file
from ckx.store.repo import BUILTIN_KINDS, KIND_DIRS, Repo

LOCAL = "local"


class AlreadyExists(CkxError):
    """An entry with that alias or uid is already there."""


# -- looking entries up ---------------------------------------------------------------------------
def known_modules(ctx: Context) -> list[str]:
    """Built-in kinds plus every module that has entries in a registered repo."""
    return sorted(set(BUILTIN_KINDS) | set(ctx.index.modules()))


def require_module(ctx: Context, module: str | None, action: str) -> str:
    """``module`` if ckx knows it; UsageError (exit 2) with the known modules otherwise."""
    if not module:
        raise UsageError(f"'{action}' needs a module", hint=f"usage: ckx {action} MODULE[:ENTRY] ...")
    if module in BUILTIN_KINDS:
        return module
    if module not in ctx.index.modules():
        raise UsageError(
            f"unknown module {module!r}",
            hint="known modules: " + ", ".join(known_modules(ctx)) + f"; 'ckx help {action}' shows the usage",
        )
    return module


def find_entries(ctx: Context, cid: Cid, *, tags: Any = None, loose_tags: Any = ()) -> list[EntryRecord]:
    """Entries matching a CID (wildcards allowed) and optional tags, in registry order.

    ``loose_tags`` keeps only entries that may match those tags once their variations are applied
    (``Query.loose_tags``): a superset, for the package matcher to narrow.
    """
    include, exclude = split_tags(tags)
    if cid.repo and not has_wildcard(cid.repo):
        ctx.registry.get(cid.repo)
    records = ctx.index.query(
        Query(module=None if has_wildcard(cid.module) else cid.module,
              repo=None if has_wildcard(cid.repo) else cid.repo,
              name=cid.entry, tags=include, exclude_tags=exclude, loose_tags=tuple(loose_tags))
    )
    if has_wildcard(cid.module):
        records = [r for r in records if fnmatch.fnmatchcase(r.module, cid.module or "*")]
    if has_wildcard(cid.repo):
        records = [r for r in records if fnmatch.fnmatchcase(r.repo, cid.repo or "*")]
    return records


def entry_standing(ctx: Context, record: EntryRecord) -> int:
    """0 for the entries of the built-in repo and of the user's own repos; 1 for those that came from others.

    From others: the entry's repo was pulled or unzipped (``Repo.standing``), or the entry carries a
    provenance mark (``ckx.store.entry.mark_foreign``: unzipped into one of the user's repos).
    """
    try:
        standing = ctx.registry.get(record.repo).standing
    except NotFound:
        return 1
    return max(standing, 1 if foreign_origin(record.meta) else 0)


def entry_rank(ctx: Context, record: EntryRecord) -> tuple[int, int]:
    """How an entry ranks when a name matches several, lowest first: (standing, format).

    The user's own and built-in entries come before those of others, so pulling or unzipping a repo
    never changes which entry a name resolves to; within one standing, native entries come before
    CK-format ones (which ckx reads but does not run).
    """
    return entry_standing(ctx, record), 1 if record.ck_format else 0


def best_ranked(ctx: Context, records: list[EntryRecord]) -> list[EntryRecord]:
    """The records of the best (lowest) ``entry_rank``, in their order."""
    if len(records) < 2:
        return list(records)
    ranks = [entry_rank(ctx, r) for r in records]
    best = min(ranks)
    return [r for r, rank in zip(records, ranks) if rank == best]


def resolution_forms(records: list[EntryRecord]) -> str:
    """The names that pick each of ``records``: ``REPO:MODULE:NAME``, or ``REPO:MODULE:UID`` where a repo
    holds two of that name."""
    forms = []
    for record in records:
        same = [r for r in records if r.repo == record.repo and r.name == record.name]
        name = record.uid if len(same) > 1 and record.uid else record.name
        forms.append(f"{record.repo}:{record.module}:{name}")
    return " or ".join(dict.fromkeys(forms))


def join_names(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``: names for a message."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def resolve_entry(ctx: Context, cid: Cid, *, ranked: bool = True) -> EntryRecord:
    """Exactly one entry for ``cid``: NotFound (3) when none, Ambiguous (3) listing candidates when several.

    With ``ranked`` (the default), several matches are narrowed to those of the best ``entry_rank``
    first: a pulled twin of a built-in entry does not make its name ambiguous. The actions that delete
    or rename pass ``ranked=False``, so they act only on an entry the name alone picks.
    """
    if not cid.entry:
        raise UsageError(f"'{cid}' names no entry", hint="use MODULE:ENTRY, e.g. package:model-resnet50-mlperf-onnx")
    records = find_entries(ctx, cid)
    if not records:
        raise NotFound(
            f"no entry {cid}",
            hint=f"'ckx list {cid.module}' shows the entries; 'ckx search {cid.module} --tags=...' searches them",
        )
    top = best_ranked(ctx, records) if ranked else records
    if len(top) > 1:
        repos = list(dict.fromkeys(r.repo for r in top))
        where = f" in repos {join_names(repos)}" if len(repos) > 1 else ""
        raise Ambiguous(
            f"{cid} matches {len(top)} entries{where}",
            [f"{r.cid} ({r.uid}) {r.path}" for r in top],
            hint=f"name one: {resolution_forms(top)}",
        )
    return top[0]


def check_inside_repo(ctx: Context, record: EntryRecord) -> None:
    """MetaError when the entry's directory or meta leads outside its repo through a symlink (never followed)."""
    repo = ctx.registry.get(record.repo)
    repo.check_inside(record.path, "entry directory")
    repo.check_inside(record.meta_path, "meta file")


def entry_result(record: EntryRecord, meta: dict | None = None) -> dict:
    result = record.summary()
    result["meta"] = meta if meta is not None else load_meta(record.meta_path)
    return result


def resolve_base(ctx: Context, record: EntryRecord, base: str) -> EntryRecord:
    """The base entry ``base`` of ``record``: the one in the record's own repo, else the best-ranked one.

    So a base shared by built-in entries is never replaced by a namesake another repo brings along.
    """
    own = find_entries(ctx, Cid(module=record.module, entry=base, repo=record.repo))
    if len(own) == 1:
        return own[0]
    return resolve_entry(ctx, Cid(module=record.module, entry=base))


def merged_meta(ctx: Context, record: EntryRecord, _seen: tuple[str, ...] = ()) -> dict:
    """An entry's meta with its base entry's meta merged under it (``"base": "alias"``, recursively)."""
    check_inside_repo(ctx, record)
    meta = load_meta(record.meta_path)
    base = meta.get("base") or meta.get("_base_entry")
    if not base:
        return meta
    if record.uid in _seen:
        raise UsageError(f"{record.meta_path}: field 'base': the chain of base entries loops back to {record.cid}")
    base_record = resolve_base(ctx, record, str(base))
    return deep_merge(merged_meta(ctx, base_record, _seen + (record.uid or record.cid,)), meta)


# -- search helpers ------------------------------------------------------------------------------
def _string_values(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _string_values(item)
    elif isinstance(value, list):
        for item in value:
            yield from _string_values(item)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def matches_string(meta: dict, pattern: str) -> bool:
    """CK's search_string: the wildcard pattern matches at least one string value of the meta."""
    return any(fnmatch.fnmatchcase(text, pattern) for text in _string_values(meta))


def matches_dict(meta: Any, subset: Any) -> bool:
    """Deep subset: every key of ``subset`` is in ``meta`` with a matching value; lists must contain the items."""
    if isinstance(subset, dict):
        return isinstance(meta, dict) and all(k in meta and matches_dict(meta[k], v) for k, v in subset.items())
    if isinstance(subset, list):
        return isinstance(meta, list) and all(any(matches_dict(m, s) for m in meta) for s in subset)
    return meta == subset


def search(ctx: Context, inp: dict) -> dict:
    """Entries by module (optional), tags (``-tag`` excludes), search_string and search_dict (typed options)."""
    module = inp.get("module")
    if module and not has_wildcard(module):
        require_module(ctx, module, "search")
    cid = Cid(module=module, entry=inp.get("entry"), repo=inp.get("repo"))
    records = find_entries(ctx, cid, tags=inp.get("tags"))
    pattern = inp.get("search_string")
    subset = inp.get("search_dict")
    if pattern:
        records = [r for r in records if matches_string(r.meta, pattern)]
    if subset:
        records = [r for r in records if matches_dict(r.meta, subset)]
    return {"return": 0, "entries": [r.summary() for r in records]}


# -- actions -------------------------------------------------------------------------------------
def _target_repo(ctx: Context, name: str | None) -> Repo:
    repo = ctx.registry.get(name or LOCAL)
    if not repo.writable:
        raise UsageError(
            repo.read_only_reason() or f"repo {repo.name!r} is read-only",
            hint="add the entry to a native repo (--repo=local or a repo made with 'ckx add repo:NAME')",
        )
    return repo


def add(ctx: Context, inp: dict) -> dict:
    """Create an entry: ``ckx add MODULE:ALIAS [--tags=a,b] [@meta.json] [--repo=NAME]``."""
    module = inp.get("module")
    if not module:
        raise UsageError("'add' needs a module", hint="usage: ckx add MODULE[:ALIAS] [--tags=...] [@meta.json]")
    if module not in BUILTIN_KINDS and module not in ctx.index.modules() and not inp.get("new_module"):
        raise UsageError(
            f"unknown module {module!r}",
            hint="known modules: " + ", ".join(known_modules(ctx)) + "; pass --new_module to start a new one",
        )
    check_name(module, "module name")
    meta = dict(inp.get("meta") or inp.get("dict") or {})
    alias = inp.get("entry") or meta.get("alias")
    if alias is not None:
        check_name(alias, "alias")
        if has_wildcard(alias):
            raise UsageError(f"an alias cannot hold wildcards: {alias!r}")
    uid = inp.get("uid") or meta.get("uid") or (alias if alias and is_uid(alias) else None) or new_uid()
    if not is_uid(uid):
        raise UsageError(f"invalid uid {uid!r}: a uid is 16 lowercase hex digits")
    if alias and is_uid(alias):
        alias = None
    repo = _target_repo(ctx, inp.get("repo"))
    meta["uid"] = uid
    meta["alias"] = alias
    meta["tags"] = normalise_tags([*normalise_tags(meta.get("tags")), *normalise_tags(inp.get("tags"))])
    meta.setdefault("schema_version", META_SCHEMA_VERSION)
    record = write_new_entry(ctx, repo, module, alias, uid, meta)
    return {"return": 0, **record.summary(), "text": f"added {record.cid} ({uid}) at {record.path}"}


def write_new_entry(
    ctx: Context, repo: Repo, module: str, alias: str | None, uid: str, meta: dict,
    *, files_from: Path | None = None, validate: bool = True, uid_scope: str | None = None,
) -> EntryRecord:
    """Write a new native entry atomically; refuse alias and uid clashes, naming the existing entry.

    ``files_from`` is an entry directory whose files (not its meta) come along; the uid must be unused in
    every repo, or only in repo ``uid_scope`` (a move keeps its uid while the source still exists).
    """
    import shutil  # lazily: only writes need it, and it costs start-up time on every search

    dirname = alias or uid
    module_dir = repo.module_dir(module)
    target = module_dir / dirname
    meta_name = "meta.json"
    if validate:
        validate_meta(meta, module, f"{repo.name}:{module}:{dirname}/{meta_name}")
    for clash in ctx.index.query(Query(module=module, repo=uid_scope, name=uid)):
        if clash.uid == uid:
            raise AlreadyExists(f"uid {uid} is already used by {clash.cid} at {clash.path}")
    if alias:
        for clash in ctx.index.query(Query(module=module, repo=repo.name, name=alias)):
            raise AlreadyExists(
                f"{module}:{alias} already exists in repo {repo.name} ({clash.uid}) at {clash.path}",
                hint="choose another alias, or remove it first with 'ckx rm'",
            )
    module_dir.mkdir(parents=True, exist_ok=True)
    staging = module_dir / f".tmp-{uid}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        if files_from is not None:
            shutil.copytree(files_from, staging, symlinks=True, ignore=_copy_filter(ctx, files_from))
        else:
            staging.mkdir()
        write_meta_file(staging / meta_name, meta)
        try:
            os.rename(staging, target)  # fails if the target exists: the clash check that wins races
        except OSError:
            raise AlreadyExists(
                f"{module}:{dirname} already exists in repo {repo.name} at {target}",
                hint="choose another alias, or remove it first with 'ckx rm'",
            ) from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    ctx.index.refresh([module], force=True)
    for record in ctx.index.query(Query(module=module, repo=repo.name, name=uid)):
        return record
    raise CkxError(f"the new entry at {target} did not appear in the index")  # pragma: no cover


def _copy_filter(ctx: Context, entry_dir: Path):
    """copytree's ignore: the meta files, and symlinks that lead outside the entry (skipped with a warning)."""
    metas = {".cm", "meta.json", "meta.yaml", "meta.yml"}
    top = os.path.realpath(entry_dir)

    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = set(metas) if os.path.realpath(directory) == top else set()
        for name in names:
            path = os.path.join(directory, name)
            if name in skipped or not os.path.islink(path):
                continue
            real = os.path.realpath(path)
            if real != top and not real.startswith(top + os.sep):
                ctx.warn(f"not copied: {path} is a symlink to {real}, outside the entry")
                skipped.add(name)
        return skipped

    return ignore


def load(ctx: Context, inp: dict) -> dict:
    """An entry's meta and location: ``ckx load MODULE:ENTRY [--merged]``."""
    record = resolve_entry(ctx, _cid(inp))
    check_inside_repo(ctx, record)
    meta = merged_meta(ctx, record) if inp.get("merged") else load_meta(record.meta_path)
    return {"return": 0, **entry_result(record, meta)}


def find(ctx: Context, inp: dict) -> dict:
    """Paths of entries: one for ``MODULE:ENTRY``, all matches for wildcards or ``--tags``."""
    cid = _cid(inp)
    require_module(ctx, cid.module, "find")
    if cid.entry and not has_wildcard(cid.entry) and not inp.get("tags"):
        record = resolve_entry(ctx, cid)
        return {"return": 0, "path": str(record.path), **record.summary()}
    records = find_entries(ctx, cid, tags=inp.get("tags"))
    if not records:
        raise NotFound(f"no {cid.module} entry matches", hint=f"'ckx list {cid.module}' shows the entries")
    return {"return": 0, "entries": [r.summary() for r in records]}


def list_entries(ctx: Context, inp: dict) -> dict:
    """``ckx list MODULE[:PATTERN]``; with no module, the modules and their entry counts."""
    if not inp.get("module"):
        counts: dict[str, int] = {}
        for record in ctx.index.query(Query()):
            counts[record.module] = counts.get(record.module, 0) + 1
        return {"return": 0, "modules": counts}
    cid = _cid(inp)
    if not has_wildcard(cid.module):
        require_module(ctx, cid.module, "list")
    records = find_entries(ctx, cid, tags=inp.get("tags"))
    return {"return": 0, "entries": [r.summary() for r in records]}


def rm(ctx: Context, inp: dict) -> dict:
    """Delete entries (wildcards allowed); asks on a TTY, needs ``--force`` otherwise."""
    cid = _cid(inp)
    require_module(ctx, cid.module, "rm")
    if not cid.entry and not inp.get("tags"):
        raise UsageError("'rm' needs an entry or --tags", hint=f"usage: ckx rm {cid.module}:ENTRY [--force]")
    if cid.entry and not has_wildcard(cid.entry) and not inp.get("tags"):
        records = [resolve_entry(ctx, cid, ranked=False)]
    else:
        records = find_entries(ctx, cid, tags=inp.get("tags"))
        if not records:
            raise NotFound(f"nothing matches {cid}" + (f" with tags {','.join(inp['tags'])}" if inp.get("tags") else ""))
    confirm_deletion(ctx, inp, [r.cid for r in records])
    removed = []
    for record in records:
        repo = ctx.registry.get(record.repo)
        if not repo.writable:
            raise UsageError(f"{record.cid}: {repo.read_only_reason()}")
        delete_tree(record.path)
        removed.append(record.summary())
    ctx.index.refresh({r["module"] for r in removed}, force=True)
    text = "\n".join(f"removed {r['cid']} ({r['uid']})" for r in removed)
    return {"return": 0, "removed": removed, "text": text}


def confirm_deletion(ctx: Context, inp: dict, names: list[str]) -> None:
    """Ask before deleting, or require --force when nobody can be asked."""
    if inp.get("force"):
        return
    question = f"delete {len(names)} entr{'y' if len(names) == 1 else 'ies'}: " + ", ".join(names[:10]) + "?"
    if ctx.interactive:
        if ctx.reporter.choose(question, ["no", "yes"], default=0) == 1:
            return
        raise UsageError("nothing deleted")
    raise UsageError(
        "refusing to delete without confirmation: " + ", ".join(names[:10]),
        hint="add --force (ckx never prompts under --quiet or without a terminal)",
    )


def delete_tree(path: Path) -> None:
    """Remove a directory: first renamed aside (so it vanishes at once), then deleted."""
    import shutil  # lazily: only writes need it, and it costs start-up time on every search

    aside = path.parent / f".rm-{path.name}-{os.getpid()}"
    os.rename(path, aside)
    shutil.rmtree(aside, ignore_errors=True)


def _second_cid(inp: dict, source: EntryRecord) -> tuple[str, str | None]:
    """(repo, alias) of the target of ren/cp: ``NEW``, ``:NEW``, ``MODULE:NEW`` or ``REPO:MODULE:NEW``.

    ``--new_repo`` and ``--new_alias`` say the same in keys.
    """
    cids = inp.get("cids") or []
    target_repo = inp.get("new_repo")
    new_alias = inp.get("new_alias")
    if len(cids) > 1:
        text = cids[1]
        if ":" not in text:
            new_alias = text
        elif text.startswith(":"):
            new_alias = text[1:]
        else:
            target = Cid.parse(text)
            if target.module != source.module:
                raise UsageError(f"cannot move or copy {source.cid} into another module ({target.module})")
            target_repo = target.repo or target_repo
            new_alias = target.entry or new_alias
    return target_repo or source.repo, new_alias


def ren(ctx: Context, inp: dict) -> dict:
    """Rename an entry, or move it to another repo, keeping its uid: ``ckx ren M:OLD NEW`` or ``M:OLD REPO:M:NEW``."""
    source = resolve_entry(ctx, _cid(inp), ranked=False)
    source_repo = ctx.registry.get(source.repo)
    if not source_repo.writable:
        raise UsageError(f"{source.cid}: {source_repo.read_only_reason()}", hint="use 'ckx cp' to copy it")
    repo_name, alias = _second_cid(inp, source)
    alias = alias or source.alias
    if alias:
        check_name(alias, "alias")
    target_repo = _target_repo(ctx, repo_name)
    meta = load_meta(source.meta_path)
    meta["alias"] = alias
    if target_repo.name == source.repo:
        if alias == source.alias:
            raise UsageError(f"{source.cid} already has that name")
        for clash in ctx.index.query(Query(module=source.module, repo=target_repo.name, name=alias)):
            raise AlreadyExists(f"{source.module}:{alias} already exists in repo {target_repo.name} at {clash.path}")
        target = target_repo.module_dir(source.module) / (alias or source.uid)
        if target.exists():
            raise AlreadyExists(f"{target} already exists")
        os.rename(source.path, target)
        write_meta_file(target / source.meta_path.name, meta)
        ctx.index.refresh([source.module], force=True)
        record = ctx.index.query(Query(module=source.module, repo=target_repo.name, name=source.uid))[0]
    else:
        # Across repos: copy under the same uid into the target first, then delete the source.
        record = write_new_entry(ctx, target_repo, source.module, alias, source.uid, meta,
                                 files_from=source.path, validate=False, uid_scope=target_repo.name)
        delete_tree(source.path)
        ctx.index.refresh([source.module], force=True)
    return {"return": 0, **record.summary(), "text": f"moved {source.cid} to {record.cid}"}


def cp(ctx: Context, inp: dict) -> dict:
    """Copy an entry under a new uid: ``ckx cp M:SRC NEW`` or ``M:SRC REPO:M:NEW`` (also from CK-format repos)."""
    source = resolve_entry(ctx, _cid(inp))
    check_inside_repo(ctx, source)
    repo_name, alias = _second_cid(inp, source)
    if repo_name == source.repo and (alias is None or alias == source.alias):
        raise UsageError("'cp' needs a new name or another repo", hint=f"usage: ckx cp {source.cid} NEW_ALIAS")
    target_repo = _target_repo(ctx, repo_name if ctx.registry.get(repo_name).writable else LOCAL)
    meta = load_meta(source.meta_path)
    meta["tags"] = normalise_tags(meta.get("tags"))
    meta.setdefault("schema_version", META_SCHEMA_VERSION)
    uid = new_uid()
    meta["uid"] = uid
    meta["alias"] = alias or source.alias
    record = write_new_entry(ctx, target_repo, source.module, meta["alias"], uid, meta,
                             files_from=source.path, validate=False)
    return {"return": 0, **record.summary(), "text": f"copied {source.cid} to {record.cid} ({uid})"}


def list_tags(ctx: Context, inp: dict) -> dict:
    """Every tag used in a module (or everywhere) with its number of entries."""
    module = inp.get("module")
    if module:
        require_module(ctx, module, "list_tags")
    if inp.get("tags"):
        counts: dict[str, int] = {}
        for record in find_entries(ctx, Cid(module=module, repo=inp.get("repo")), tags=inp.get("tags")):
            for tag in record.tags:
                counts[tag] = counts.get(tag, 0) + 1
        return {"return": 0, "tags": dict(sorted(counts.items()))}
    return {"return": 0, "tags": ctx.index.tag_counts(module)}


def path(ctx: Context, inp: dict) -> dict:
    """The directory of an entry (``MODULE:ENTRY``), of a module, or of a repo (``repo:NAME``)."""
    cid = _cid(inp)
    if cid.module == "repo" and cid.entry:
        repo = ctx.registry.get(cid.entry)
        return {"return": 0, "path": str(repo.path)}
    require_module(ctx, cid.module, "path")
    if not cid.entry:
        repo = ctx.registry.get(cid.repo or LOCAL)
        return {"return": 0, "path": str(repo.module_dir(cid.module or ""))}
    record = resolve_entry(ctx, cid)
    return {"return": 0, "path": str(record.path), **record.summary()}


def _cid(inp: dict) -> Cid:
    return Cid(module=inp.get("module"), entry=inp.get("entry"), repo=inp.get("repo"))


__all__ = [
    "AlreadyExists", "KIND_DIRS", "add", "best_ranked", "cp", "entry_rank", "entry_standing", "find", "find_entries",
    "join_names", "known_modules", "list_entries", "list_tags", "load", "merged_meta", "path", "ren", "require_module",
    "resolution_forms", "resolve_base", "resolve_entry", "rm", "search", "write_new_entry",
]
