"""Env records: one detected or installed thing, its variables and env.sh; show, rm and virtual env."""
from __future__ import annotations

import functools
import logging
import os
import re
import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckx.store.context import Context
from ckx.core.errors import MetaError, NotFound, ProgramFailed, UsageError
from ckx.store.index import EntryRecord, Query, split_tags
from ckx.software.environment import PATH_VARIABLES, env_text, merge_env, path_items
from ckx.core.cid import Cid, new_uid
from ckx.core.jsonio import write_json_atomic, write_text_atomic
from ckx.software.platform import platform_tags
from ckx.store.entry import normalise_tags
from ckx.store.generic import confirm_deletion, delete_tree, find_entries, write_new_entry
from ckx.store.repo import now_iso
from ckx.software.versions import VersionRange, compare_versions, is_automatic_tag, version_split, version_tags, version_text

log = logging.getLogger(__name__)

MODULE = "env"
LOCAL = "local"
ENV_SCHEMA_VERSION = 1
ENV_SCRIPT = "env.sh"
VAR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# -- the record ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EnvRecord:
    """One env entry: what it is (soft, package, version), where (full_path, install_dir), its variables."""

    uid: str
    soft: str | None
    package: str | None
    version: str | None
    tags: tuple[str, ...]
    full_path: str | None
    install_dir: str | None
    env: dict[str, str]
    path: Path
    meta: dict

    @classmethod
    def from_meta(cls, meta: dict, path: Path) -> EnvRecord:
        env = meta.get("env") or {}
        return cls(
            uid=str(meta.get("uid") or path.name), soft=meta.get("soft"), package=meta.get("package"),
            version=version_text(meta.get("version")), tags=tuple(meta.get("tags") or ()),
            full_path=meta.get("full_path"), install_dir=meta.get("install_dir"),
            env={str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {},
            path=Path(path), meta=meta,
        )

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.soft or self.package or self.uid)

    @property
    def env_prefix(self) -> str | None:
        return self.meta.get("env_prefix")

    @property
    def deps(self) -> dict[str, str]:
        deps = self.meta.get("deps") or {}
        return dict(deps) if isinstance(deps, dict) else {}

    @property
    def created(self) -> str:
        return str(self.meta.get("updated") or self.meta.get("created") or "")

    @property
    def script(self) -> Path:
        """The env.sh next to the meta."""
        return self.path / ENV_SCRIPT

    def is_present(self) -> bool:
        """False when the thing it records is gone from the disk (its full_path or install_dir)."""
        for location in (self.full_path, self.install_dir):
            if location and not os.path.exists(location):
                return False
        return True

    def user_tags(self) -> list[str]:
        """Its tags without the automatic version and platform tags."""
        return [t for t in self.tags if not is_automatic_tag(t)]

    def summary(self) -> dict:
        """The JSON form of show/detect results."""
        return {"uid": self.uid, "soft": self.soft, "package": self.package, "version": self.version,
                "tags": list(self.tags), "full_path": self.full_path, "install_dir": self.install_dir,
                "env": dict(self.env), "path": str(self.path), "deps": self.deps}


@dataclass(frozen=True)
class ResolvedDep:
    """One dependency, resolved to an env. ``origin``: forced, env (recorded before), detected or installed."""

    name: str
    env_uid: str
    soft: str | None
    version: str | None
    tags: tuple[str, ...]
    env: dict[str, str]
    full_path: str | None
    install_dir: str | None
    package: str | None
    origin: str = "env"
    python: str | None = field(default=None, compare=False)

    @classmethod
    def from_env(cls, name: str, record: EnvRecord, origin: str) -> ResolvedDep:
        return cls(name=name, env_uid=record.uid, soft=record.soft, version=record.version, tags=record.tags,
                   env=dict(record.env), full_path=record.full_path, install_dir=record.install_dir,
                   package=record.package, origin=origin, python=record.meta.get("python"))

    def to_choice(self) -> dict:
        """The form recorded in a run's choices: env_uid, soft, version, tags, package."""
        return {"env_uid": self.env_uid, "soft": self.soft, "version": self.version, "tags": list(self.tags),
                "package": self.package}


def _record_of(entry: EntryRecord) -> EnvRecord | None:
    meta = entry.meta
    if not isinstance(meta, dict) or "env" not in meta or "soft" not in meta:
        return None  # not a ckx env record (CK's own env entries have soft_uoa and machine-specific paths)
    return EnvRecord.from_meta(meta, entry.path)


def _env_records(ctx: Context, query: Query) -> list[EnvRecord]:
    found = []
    for entry in ctx.index.query(query):
        record = _record_of(entry)
        if record is not None:
            found.append(record)
    return found


def sort_newest_first(records: Iterable[EnvRecord]) -> list[EnvRecord]:
    """Newest version first; among equal versions the most recently created or updated first."""
    def order(a: EnvRecord, b: EnvRecord) -> int:
        if a.version and b.version:
            cmp = compare_versions(a.version, b.version)
            if cmp:
                return -cmp
        elif a.version or b.version:
            return -1 if a.version else 1
        return (a.created < b.created) - (a.created > b.created)

    return sorted(records, key=functools.cmp_to_key(order))


def find_envs(
    ctx: Context,
    tags: str | Sequence[str] | None = None,
    *,
    version_from: Any = None,
    version_to: Any = None,
    version: str | None = None,
    soft: str | None = None,
) -> list[EnvRecord]:
    """Recorded envs carrying all ``tags`` (``-tag`` excludes), within the version range, newest first.

    ``version_from``/``version_to`` are inclusive (CK's int lists or strings); ``version`` is a PEP 440
    specifier (``">=1.24,<3"``) or an exact version.
    """
    include, exclude = split_tags(tags)
    records = _env_records(ctx, Query(module=MODULE, tags=include, exclude_tags=exclude))
    if soft is not None:
        records = [r for r in records if r.soft == soft]
    bounds = VersionRange.from_spec({"version_from": version_from, "version_to": version_to, "version": version})
    if bounds:
        records = [r for r in records if bounds.contains(r.version)]
    return sort_newest_first(records)


def load_env(ctx: Context, uid: str) -> EnvRecord:
    """The env whose uid is ``uid``; NotFound otherwise."""
    for entry in ctx.index.query(Query(module=MODULE, name=uid)):
        record = _record_of(entry)
        if record is not None:
            return record
    raise NotFound(f"no env {uid}", hint="'ckx show env' lists the recorded envs")


# -- writing -------------------------------------------------------------------------------------
def _check_env_vars(env: Mapping[str, Any], where: str) -> dict[str, str]:
    result = {}
    for key, value in env.items():
        if not VAR_NAME_RE.match(str(key)):
            raise MetaError(f"{where}: invalid environment variable name {key!r}")
        text = env_text(value)
        if text is not None:
            result[str(key)] = text
    return result


def render_env_script(record_meta: Mapping[str, Any]) -> str:
    """The env.sh text of an env: one ``export`` per variable, values shell-quoted.

    Search-path variables (PYTHONPATH, PATH, ...) are prepended to the current value. With an env
    prefix, the exports sit behind the guard ``<PREFIX>_SET=1`` so that sourcing twice changes nothing.
    """
    env = dict(record_meta.get("env") or {})
    prefix = record_meta.get("env_prefix")
    guard = f"{prefix}_SET" if prefix else None
    header = [
        "#!/bin/sh",
        f"# ckx env {record_meta.get('uid')}: {record_meta.get('soft') or record_meta.get('package')} "
        f"{record_meta.get('version') or ''}".rstrip(),
        "# Written from meta.json; 'ckx detect' or 'ckx install' rewrite it.",
    ]
    body = []
    for key in sorted(env):
        if key == guard:
            continue
        if key in PATH_VARIABLES:
            items = path_items(key, str(env[key]))
            if not items:
                continue
            value = shlex.quote(os.pathsep.join(items))
            body.append(f'export {key}={value}"${{{key}:+:${{{key}}}}}"')
        else:
            body.append(f"export {key}={shlex.quote(str(env[key]))}")
    if guard:
        body.append(f"export {guard}=1")
        lines = header + [f'if [ "${{{guard}:-}}" != "1" ]; then'] + ["  " + line for line in body] + ["fi"]
    else:
        lines = header + body
    return "\n".join(lines) + "\n"


def _same_thing(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether the recorded meta ``old`` is the thing ``new`` describes (so ``new`` updates it)."""
    version = new.get("version")
    if old.get("soft") != new.get("soft") or version_text(old.get("version")) != version:
        return False
    if not _same_interpreter(old, new):
        return False
    if new.get("full_path"):
        return old.get("full_path") == new["full_path"]
    if new.get("install_dir"):
        return old.get("install_dir") == new["install_dir"]
    return False


def _same_interpreter(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """For Python modules (``detected_by`` "module"): whether both were found through the same interpreter.

    One numpy seen through a ``--system-site-packages`` venv and through the system python is two
    envs, each tied to its interpreter, rather than one whose python dep flips between them. The
    interpreter is the ``python`` path (not resolved: a venv's python is a symlink to its base), or the
    ``python`` dep's uid when a record lacks the path. Other kinds of records always match here.
    """
    if "module" not in (old.get("detected_by"), new.get("detected_by")):
        return True
    old_path, new_path = old.get("python"), new.get("python")
    if old_path and new_path:
        return os.path.normpath(str(old_path)) == os.path.normpath(str(new_path))
    old_dep = (old.get("deps") or {}).get("python")
    new_dep = (new.get("deps") or {}).get("python")
    return old_dep == new_dep


def record_env(
    ctx: Context,
    *,
    soft: str | None,
    version: Any,
    full_path: str | os.PathLike | None,
    env: Mapping[str, Any],
    tags: str | Sequence[str],
    package: str | None = None,
    install_dir: str | os.PathLike | None = None,
    extra_tags: str | Sequence[str] = (),
    env_prefix: str | None = None,
    deps: Mapping[str, str] | None = None,
    name: str | None = None,
    detected_by: str | None = None,
    extra_meta: Mapping[str, Any] | None = None,
) -> EnvRecord:
    """Record an env in the local repo and write its env.sh; returns it.

    The same soft, full_path (or install_dir) and version give the same env, updated in place (uid and
    ``created`` kept), not a duplicate; for a Python module (``detected_by="module"``) the interpreter it
    was found through (``extra_meta["python"]``, else ``deps["python"]``) must be the same too. Tags get
    the version tags (v3, v3.11, v3.11.7) and the platform tags added; ``<env_prefix>_SET=1`` joins the
    variables. Raises MetaError for a bad variable name.
    """
    return record_env_ex(
        ctx, soft=soft, version=version, full_path=full_path, env=env, tags=tags, package=package,
        install_dir=install_dir, extra_tags=extra_tags, env_prefix=env_prefix, deps=deps, name=name,
        detected_by=detected_by, extra_meta=extra_meta,
    )[0]


def record_env_ex(
    ctx: Context,
    *,
    soft: str | None,
    version: Any,
    full_path: str | os.PathLike | None,
    env: Mapping[str, Any],
    tags: str | Sequence[str],
    package: str | None = None,
    install_dir: str | os.PathLike | None = None,
    extra_tags: str | Sequence[str] = (),
    env_prefix: str | None = None,
    deps: Mapping[str, str] | None = None,
    name: str | None = None,
    detected_by: str | None = None,
    extra_meta: Mapping[str, Any] | None = None,
) -> tuple[EnvRecord, bool]:
    """``record_env`` that also says whether the env is new (True) or was already recorded (False)."""
    # reason: filelock loads only when a record is written under a lock (light start-up)
    from filelock import FileLock

    version = version_text(version)
    full_path = str(full_path) if full_path else None
    install_dir = str(install_dir) if install_dir else None
    what = f"env of {soft or package}"
    if env_prefix is not None and not VAR_NAME_RE.match(env_prefix):
        raise MetaError(f"{what}: invalid env_prefix {env_prefix!r}")
    variables = _check_env_vars(env or {}, what)
    if env_prefix:
        variables[f"{env_prefix}_SET"] = "1"
    all_tags = normalise_tags(tags) + normalise_tags(extra_tags) + version_tags(version) + platform_tags()
    meta: dict[str, Any] = {
        "alias": None, "schema_version": ENV_SCHEMA_VERSION, "tags": list(dict.fromkeys(all_tags)),
        "soft": soft, "package": package, "name": name or soft or package or "env",
        "version": version, "version_split": version_split(version), "full_path": full_path,
        "install_dir": install_dir, "env_prefix": env_prefix, "env": variables, "deps": dict(deps or {}),
        "detected_by": detected_by or ("package" if package else None),
    }
    meta.update(extra_meta or {})
    repo = ctx.registry.get(LOCAL)
    ctx.home.locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(ctx.home.locks / "envs.lock"), timeout=120):
        ctx.index.refresh([MODULE], force=True)
        for entry in ctx.index.query(Query(module=MODULE, repo=repo.name)):
            old = entry.meta
            if _same_thing(old, meta):
                # Keep what others added (a venv's tag, a dep): detecting again must not take it away.
                kept = [t for t in old.get("tags") or () if not is_automatic_tag(t) and t not in meta["tags"]]
                meta["tags"] = meta["tags"] + kept
                meta["deps"] = {**(old.get("deps") or {}), **meta["deps"]}
                meta["uid"] = old.get("uid") or entry.path.name
                meta["created"] = old.get("created") or now_iso()
                meta["updated"] = now_iso()
                write_json_atomic(entry.meta_path, meta)
                write_text_atomic(entry.path / ENV_SCRIPT, render_env_script(meta))
                ctx.index.refresh([MODULE], force=True)
                return EnvRecord.from_meta(meta, entry.path), False
        meta["uid"] = new_uid()
        meta["created"] = meta["updated"] = now_iso()
        entry = write_new_entry(ctx, repo, MODULE, None, meta["uid"], meta, validate=False)
        write_text_atomic(entry.path / ENV_SCRIPT, render_env_script(meta))
        return EnvRecord.from_meta(meta, entry.path), True


def delete_env(ctx: Context, uid: str) -> EnvRecord:
    """Delete the env record ``uid`` (never its install_dir); returns what was deleted. NotFound if absent."""
    record = load_env(ctx, uid)
    repo_name = _repo_of(ctx, record)
    if not ctx.registry.get(repo_name).writable:
        raise UsageError(f"env {uid}: {ctx.registry.get(repo_name).read_only_reason()}")
    delete_tree(record.path)
    ctx.index.refresh([MODULE], force=True)
    return record


def _repo_of(ctx: Context, record: EnvRecord) -> str:
    for repo in ctx.registry:
        try:
            record.path.relative_to(repo.path)
        except ValueError:
            continue
        return repo.name
    return LOCAL


# -- actions -------------------------------------------------------------------------------------
def _named_envs(inp: dict) -> list:
    """The ``env:UID`` CIDs of a request (``ckx show env env:UID`` as well as ``ckx show env:UID``)."""
    names = [cid for cid in (Cid.parse(text) for text in inp.get("cids") or [] if text)
             if cid.module == MODULE and cid.entry]
    if not names and inp.get("entry"):
        names.append(Cid(module=MODULE, entry=inp["entry"], repo=inp.get("repo")))
    return names


def _tag_label(tags: Any) -> str:
    return tags if isinstance(tags, str) else ",".join(tags or ())


def _selected(ctx: Context, inp: dict) -> list[EnvRecord]:
    """The envs an action names: ``env:UID`` CIDs (wildcards allowed) and/or ``--tags``."""
    names = _named_envs(inp)
    tags = inp.get("tags")
    if not names:
        return find_envs(ctx, tags=tags) if tags else []
    found: dict[str, EnvRecord] = {}
    for cid in names:
        entries = find_entries(ctx, cid, tags=tags)
        if not entries:
            raise NotFound(f"no env {cid.entry}" + (f" with tags {_tag_label(tags)}" if tags else ""),
                           hint="'ckx show env' lists the recorded envs")
        for entry in entries:
            record = _record_of(entry)
            if record is not None:
                found[record.uid] = record
    return sort_newest_first(found.values())


def action_show(ctx: Context, inp: dict) -> dict:
    """``ckx show env [env:UID] [--tags=...]``: a table of uid, soft, version, tags and path."""
    if _named_envs(inp) or inp.get("tags"):
        records = _selected(ctx, inp)
    else:
        records = sort_newest_first(_env_records(ctx, Query(module=MODULE)))
    records.sort(key=lambda r: (r.soft or r.package or ""))  # stable: newest first within a soft
    rows = [[r.uid, r.soft or "", r.version or "", ",".join(r.user_tags()),
             (r.full_path or r.install_dir or "") + ("" if r.is_present() else "  (missing)")] for r in records]
    result: dict[str, Any] = {"return": 0, "envs": [r.summary() for r in records]}
    if rows:
        result["table"] = {"columns": ["uid", "soft", "version", "tags", "path"], "rows": rows}
    else:
        result["text"] = "no envs recorded" + (f" with tags {_tag_label(inp.get('tags'))}" if inp.get("tags") else "") + \
            " (record some with 'ckx detect soft' or 'ckx install package')"
    return result


def action_rm(ctx: Context, inp: dict) -> dict:
    """``ckx rm env:UID | env --tags=... [--force] [--all]``; ``--all`` also deletes install dirs under $CKX_TOOLS."""
    if not _named_envs(inp) and not inp.get("tags"):
        raise UsageError("'rm env' needs an env uid or --tags", hint="usage: ckx rm env:UID | ckx rm env --tags=a,b [--force]")
    records = _selected(ctx, inp)
    if not records:
        raise NotFound(f"no env has tags {_tag_label(inp.get('tags'))}", hint="'ckx show env' lists the recorded envs")
    confirm_deletion(ctx, inp, [f"env:{r.uid} ({r.soft or r.package} {r.version or ''})".replace(" )", ")")
                                for r in records])
    tools = ctx.home.tools.resolve()
    removed = []
    lines = []
    for record in records:
        if not ctx.registry.get(_repo_of(ctx, record)).writable:
            raise UsageError(f"env {record.uid} is in a CK-format repo, which ckx does not modify")
        delete_tree(record.path)
        lines.append(f"removed env {record.uid} ({record.soft or record.package} {record.version or ''})".rstrip())
        if inp.get("all") and record.install_dir:
            target = Path(record.install_dir).resolve()
            if target != tools and tools in target.parents and target.is_dir():
                delete_tree(target)
                lines.append(f"  and its install directory {target}")
            elif target.exists():
                ctx.warn(f"kept {target}: only install directories inside {tools} are deleted")
        removed.append(record.summary())
    ctx.index.refresh([MODULE], force=True)
    return {"return": 0, "removed": removed, "text": "\n".join(lines)}


def _pick(ctx: Context, records: list[EnvRecord], what: str) -> EnvRecord:
    """The preferred env among several (newest version, then most recent) and say so."""
    present = [r for r in records if r.is_present()] or records
    chosen = present[0]
    if len(present) > 1:
        others = ", ".join(f"{r.uid} ({r.version or '?'})" for r in present[1:5])
        ctx.info(f"{len(present)} envs match {what}; using {chosen.uid} ({chosen.soft} {chosen.version or ''}); "
                 f"others: {others}")
    return chosen


def virtual_environment(ctx: Context, inp: dict) -> tuple[list[EnvRecord], dict[str, str]]:
    """The envs ``virtual env`` applies (CIDs, ``--tags``, ``--tag_groups="a,b c,d"``) and the environment."""
    chosen: list[EnvRecord] = []
    cid_given = bool(inp.get("entry")) or any(":" in c for c in inp.get("cids") or [])
    if cid_given:
        chosen.extend(_selected(ctx, {**inp, "tags": None}))
    groups = []
    if inp.get("tags") and not cid_given:
        groups.append(_tag_label(inp["tags"]))
    groups.extend((inp.get("tag_groups") or "").split())
    for group in groups:
        matches = find_envs(ctx, tags=group)
        if not matches:
            raise NotFound(f"no env has tags {group}",
                           hint="record one with 'ckx detect soft --tags=...' or 'ckx install package --tags=...'")
        chosen.append(_pick(ctx, matches, f"tags {group}"))
    if not chosen:
        raise UsageError("which envs? give env:UID, --tags=... or --tag_groups='a,b c,d'",
                         hint="usage: ckx virtual env --tags=... [--shell_cmd='...'] [-- CMD ARGS]")
    return chosen, merge_env(os.environ, [r.env for r in chosen])


def action_virtual(ctx: Context, inp: dict) -> dict:
    """``ckx virtual env --tags=... [--shell_cmd='...' | --cmd='...' | -- CMD ARGS]``.

    Runs a command with the envs' variables in its environment: ``-- CMD ARGS`` as given, ``--cmd`` split
    with shlex (no shell), ``--shell_cmd`` through ``/bin/sh -c`` (shell syntax allowed). Without any,
    starts ``$SHELL`` on a terminal. A non-zero exit raises ProgramFailed (exit 6).
    """
    chosen, env = virtual_environment(ctx, inp)
    if inp.get("rest"):
        argv = [str(a) for a in inp["rest"]]
    elif inp.get("shell_cmd") is not None:
        argv = ["/bin/sh", "-c", inp["shell_cmd"]]
    elif inp.get("cmd") is not None:
        argv = shlex.split(inp["cmd"])
    elif ctx.interactive:
        argv = [os.environ.get("SHELL") or "/bin/sh"]
        ctx.info("starting a shell with " + ", ".join(f"{r.soft} {r.version or ''}".rstrip() for r in chosen)
                 + "; exit to return")
    else:
        raise UsageError("nothing to run and no terminal for a shell",
                         hint="add --shell_cmd='...' or -- CMD ARGS")
    if not argv:
        raise UsageError("the command is empty")
    timeout_s = inp.get("timeout")
    log.debug("virtual env: running %s", argv)
    try:
        proc = subprocess.run(argv, env=env, timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise NotFound(f"command not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise ProgramFailed(f"{shlex.join(argv)} ran longer than {timeout_s} s and was stopped") from None
    uids = [r.uid for r in chosen]
    if proc.returncode != 0:
        raise ProgramFailed(f"{shlex.join(argv)} exited with status {proc.returncode}",
                            hint="the envs applied: " + ", ".join(uids))
    return {"return": 0, "envs": uids, "returncode": proc.returncode, "argv": argv}


__all__ = [
    "ENV_SCRIPT",
    "PATH_VARIABLES",
    "EnvRecord",
    "action_rm",
    "action_show",
    "action_virtual",
    "delete_env",
    "find_envs",
    "load_env",
    "merge_env",
    "ResolvedDep",
    "record_env",
    "record_env_ex",
    "render_env_script",
    "sort_newest_first",
    "virtual_environment",
]
