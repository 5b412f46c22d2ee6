"""Soft entries: loading them with their customize.py hooks, and choosing those that can provide tags."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckx.core.cid import Cid
from ckx.core.errors import Ambiguous, MetaError, UsageError
from ckx.software.versions import is_automatic_tag
from ckx.software.hooks import load_hooks as load_hook_file
from ckx.store.context import Context
from ckx.store.entry import validate_meta
from ckx.store.generic import entry_rank, find_entries, resolve_entry
from ckx.store.index import EntryRecord, Query, split_tags

MODULE = "soft"
KINDS = ("python", "module", "executable", "marker")
CUSTOMIZE = "customize.py"
# Hook name -> the keyword arguments ckx offers it; a hook declares the subset it wants.
HOOKS: dict[str, frozenset[str]] = {
    "find_candidates": frozenset({"meta", "search_dirs", "depth", "python", "environ"}),
    "detect_version": frozenset({"full_path", "meta", "python", "run"}),
    "setup_env": frozenset({"full_path", "version", "meta", "env", "python", "dir"}),
    "extra_tags": frozenset({"full_path", "version", "meta", "python"}),
}


@dataclass(frozen=True)
class SoftEntry:
    """A native soft entry with a ``detect`` section and its validated hooks."""

    alias: str
    uid: str | None
    path: Path
    meta_path: Path
    meta: dict
    hooks: Mapping[str, Callable[..., Any]] = field(default_factory=dict)

    @property
    def detect(self) -> dict:
        return self.meta["detect"]

    @property
    def kind(self) -> str:
        return self.detect["kind"]

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self.meta.get("tags") or ())

    @property
    def optional_tags(self) -> tuple[str, ...]:
        """Tags some instances get (onnxruntime-cpu for the CPU wheel): a soft may provide them."""
        return _optional_tags(self.meta)

    @property
    def env_prefix(self) -> str | None:
        return self.meta.get("env_prefix")

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.alias)

    def can_provide(self, tags: Iterable[str]) -> bool:
        """True when every tag is one of its tags, optional tags, or an automatic (version/platform) tag."""
        return _can_provide(self.meta, tags)


def _optional_tags(meta: Mapping[str, Any]) -> tuple[str, ...]:
    tags = [t for t in meta.get("optional_tags") or () if isinstance(t, str)]
    detect = meta.get("detect") if isinstance(meta.get("detect"), dict) else {}
    distribution_tags = detect.get("distribution_tags")
    for extra in distribution_tags.values() if isinstance(distribution_tags, dict) else ():
        if isinstance(extra, list):
            tags.extend(t for t in extra if isinstance(t, str))
    return tuple(dict.fromkeys(tags))


def _can_provide(meta: Mapping[str, Any], tags: Iterable[str]) -> bool:
    known = set(meta.get("tags") or ()) | set(_optional_tags(meta))
    return all(t in known or is_automatic_tag(t) for t in tags)


_HOOK_CACHE: dict[tuple[str, int], dict[str, Callable[..., Any]]] = {}


def load_hooks(path: Path) -> dict[str, Callable[..., Any]]:
    """Load a soft's customize.py and return its hooks by name (cached while the file is unchanged).

    Raises MetaError naming the file when it cannot be imported, when it defines a public function
    that is not a hook, or when a hook takes positional or unknown parameters (ckx.software.hooks).
    """
    try:
        stamp = path.stat().st_mtime_ns
    except OSError as exc:
        raise MetaError(f"{path}: cannot read it: {exc.strerror}") from None
    cached = _HOOK_CACHE.get((str(path), stamp))
    if cached is None:
        cached = _HOOK_CACHE[(str(path), stamp)] = load_hook_file(path, HOOKS, file_label="a customize.py")
    return cached


def load_soft(record: EntryRecord) -> SoftEntry:
    """A SoftEntry from an indexed soft record; MetaError names the file for a bad meta or customize.py."""
    meta = record.meta
    validate_meta(meta, MODULE, record.meta_path)
    hooks_path = record.path / CUSTOMIZE
    hooks = load_hooks(hooks_path) if hooks_path.is_file() else {}
    return SoftEntry(record.alias or record.uid or record.path.name, record.uid, record.path, record.meta_path,
                     meta, hooks)


def find_softs(ctx: Context, tags: str | Sequence[str] | None = None) -> list[SoftEntry]:
    """Native soft entries able to provide ``tags`` (optional and automatic tags count): those of the
    built-in repo and the user's own repos first, then those of others (``entry_rank``), each in registry order.

    Entries without a ``detect`` section (CK-format softs, whose customize.py ckx does not run) are
    skipped; a broken soft entry is reported as a warning and skipped.
    """
    include, exclude = split_tags(tags)
    found = []
    ranked: list[tuple[tuple[int, int], EntryRecord]] = []
    for record in ctx.index.query(Query(module=MODULE)):
        meta = record.meta
        if not isinstance(meta.get("detect"), dict):
            continue
        if any(t in (meta.get("tags") or ()) for t in exclude):
            continue
        if not _can_provide(meta, include):
            continue  # decided from the meta alone: no customize.py is imported for softs that cannot match
        ranked.append((entry_rank(ctx, record), record))
    ranked.sort(key=lambda item: item[0])
    for _, record in ranked:
        try:
            found.append(load_soft(record))
        except MetaError as exc:
            ctx.warn(f"skipped soft {record.cid}: {exc}")
    return found


def get_soft(ctx: Context, name: str) -> SoftEntry:
    """The soft entry called ``name`` (alias or uid, ``repo:`` prefix allowed); NotFound/UsageError otherwise.

    A name several repos use resolves to the best-ranked entry (``resolve_entry``): the built-in
    ``compiler.python`` stays the one ckx runs after a repo with a CK-format namesake is pulled. Of
    several entries of equal rank, the one ckx can run (a native soft with ``detect``) is taken when it
    is the only one; Ambiguous otherwise.
    """
    repo = None
    if ":" in name:
        repo, name = name.rsplit(":", 1)
    cid = Cid(module=MODULE, entry=name, repo=repo)
    try:
        record = resolve_entry(ctx, cid)
    except Ambiguous:
        # A pulled CK repo brings softs of the same names (compiler.python, compiler.gcc, tool.cmake) that ckx
        # cannot run: when exactly one candidate has a 'detect' section, the name means that one.
        runnable = [r for r in find_entries(ctx, cid) if isinstance(r.meta.get("detect"), dict)]
        if len(runnable) != 1:
            raise
        record = runnable[0]
    if not isinstance(record.meta.get("detect"), dict):
        raise UsageError(
            f"soft {record.cid} has no 'detect' section, so ckx cannot run it"
            + (" (it is in CK's format, whose customize.py ckx does not execute)" if record.meta_path.parent.name == ".cm" else ""),
            hint="use a native soft entry (ckx list soft) or record the thing with 'ckx install package'",
        )
    return load_soft(record)
