"""Choosing a package: its candidates (a package entry with one variation applied, base entries merged) by tags.

This is the one package matcher: ``ckx install`` and the resolver both choose among ``find_candidates``.
A tag matches a candidate's tags, or names its variation, or its version (``1.6.0`` or ``v1.6.0``).
Candidates rank by their entry's standing (the built-in and the user's own before those of others) and
then by what ckx can run (native packages before CK-format ones); only candidates of the best rank are
chosen among, so pulling a repo changes no choice that was made before it.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ckx.core.cid import Cid
from ckx.core.errors import Ambiguous, CkxError, MetaError, NotFound, UsageError
from ckx.store.context import Context
from ckx.store.entry import deep_merge, load_meta, normalise_tags, validate_meta
from ckx.store.generic import entry_standing, find_entries, join_names, merged_meta, resolution_forms
from ckx.store.index import EntryRecord, split_tags
from ckx.software.ckpackage import CK_SCRIPT, REFUSED, ck_scripts_allowed, install_tier, is_ck_package

log = logging.getLogger(__name__)

SOURCE_KINDS = ("download", "pip", "hook")
# CK's spellings of "yes" in variation flags such as ``on_by_default``.
CK_YES = ("yes", "true", "on", "1")
# Values of CK's ``customize.version`` that name no version.
CK_NO_VERSION = ("", "with-variations", "master", "latest")


@dataclass(frozen=True)
class Candidate:
    """One installable choice: a package entry with one of its variations (or none) applied."""

    record: EntryRecord
    variation: str | None
    meta: dict
    tags: tuple[str, ...]
    is_default_variation: bool = False
    # (standing, runnable): see ``candidate_rank``; lower ranks first.
    rank: tuple[int, int] = (0, 0)

    @property
    def name(self) -> str:
        """The package's alias (its uid when it has none): what env records call the package."""
        return self.record.alias or self.record.uid or self.record.path.name

    @property
    def ck_format(self) -> bool:
        """True for a package in CK's layout (its meta follows CK's package format, not ckx's)."""
        return self.record.ck_format

    @property
    def version(self) -> str | None:
        """The version the package (with its variation) installs: ``version``, or CK's ``customize.version``."""
        value = self.meta.get("version")
        if value is None and self.ck_format:
            customize = self.meta.get("customize") if isinstance(self.meta.get("customize"), dict) else {}
            value = customize.get("version")
            if value is not None and str(value).strip().lower() in CK_NO_VERSION:
                value = None
        return None if value is None else str(value)

    @property
    def label(self) -> str:
        """``repo:package:alias`` plus the variation, for messages."""
        return self.record.cid + (f" (variation {self.variation})" if self.variation else "")


def apply_variation(base: dict, variation: str | None, *, ck_format: bool = False) -> dict:
    """The package meta with one variation deep-merged over it; the variation's tags are appended.

    ``ck_format``: the meta is a CK package's, whose variations say ``extra_tags`` (appended to the tags),
    ``extra_customize`` (merged into ``customize``), ``extra_env`` (merged into
    ``customize.install_env``), ``version`` (the ``customize.version``) and ``on_by_default``, as CK
    applies them. Raises NotFound when the package has no such variation.
    """
    meta = {key: value for key, value in base.items() if key != "variations"}
    if variation is None:
        return meta
    variations = base.get("variations") or {}
    if variation not in variations:
        known = ", ".join(sorted(variations)) or "none"
        name = base.get("alias") or base.get("uid")
        raise NotFound(f"package {name} has no variation {variation!r} (it has: {known})")
    if ck_format:
        return _apply_ck_variation(meta, variations[variation])
    spec = dict(variations[variation])
    extra_tags = normalise_tags(spec.pop("tags", None))
    spec.pop("default", None)
    merged = deep_merge(meta, spec)
    merged["tags"] = normalise_tags(list(normalise_tags(meta.get("tags"))) + extra_tags)
    return merged


def _apply_ck_variation(meta: dict, spec: Any) -> dict:
    spec = spec if isinstance(spec, dict) else {}
    merged = deep_merge(meta, {})
    customize = merged.get("customize") if isinstance(merged.get("customize"), dict) else {}
    extra_customize = spec.get("extra_customize")
    if isinstance(extra_customize, dict):
        customize = deep_merge(customize, extra_customize)
    extra_env = spec.get("extra_env")
    if isinstance(extra_env, dict):
        install_env = customize.get("install_env") if isinstance(customize.get("install_env"), dict) else {}
        customize["install_env"] = {**install_env, **extra_env}
    if spec.get("version") is not None:
        customize["version"] = spec["version"]
    merged["customize"] = customize
    merged["tags"] = normalise_tags(list(normalise_tags(meta.get("tags"))) + normalise_tags(spec.get("extra_tags")))
    return merged


def _is_default(base: dict, name: str | None, *, ck_format: bool) -> bool:
    if name is None:
        return False
    spec = (base.get("variations") or {}).get(name)
    spec = spec if isinstance(spec, dict) else {}
    if ck_format:
        return str(spec.get("on_by_default", "")).strip().lower() in CK_YES
    return base.get("default_variation") == name or bool(spec.get("default"))


def _selects(tag: str, candidate: Candidate) -> bool:
    """A tag beyond the candidate's tags that still selects it: its variation's name, or its version."""
    if tag == candidate.variation:
        return True
    version = candidate.version
    if not version:
        return False
    wanted = tag[1:] if tag[:1] in ("v", "V") and tag[1:2].isdigit() else tag
    if not wanted[:1].isdigit():
        return False
    return wanted == version or same_version(wanted, version)


def _needle(tag: str) -> str:
    """The text a tag leaves in a meta that may match it: the tag, or for a version (``v1.6.0``) its
    digits without the leading ``v`` and trailing ``.0`` parts (``1.6`` matches ``1.6.0`` as a version)."""
    wanted = tag[1:] if tag[:1] in ("v", "V") and tag[1:2].isdigit() else tag
    if not wanted[:1].isdigit():
        return tag
    while wanted.endswith(".0") and wanted.count(".") > 0:
        wanted = wanted[:-2]
    return wanted


def _may_match(base: dict, include: Sequence[str]) -> bool:
    """Whether some variation of ``base`` may carry every tag (before applying any: no copies made)."""
    variations = base.get("variations") if isinstance(base.get("variations"), dict) else {}
    known = set(normalise_tags(base.get("tags"))) | set(variations)
    for spec in variations.values():
        if isinstance(spec, dict):
            known.update(normalise_tags(spec.get("tags")), normalise_tags(spec.get("extra_tags")))
    return all(tag in known or _needle(tag)[:1].isdigit() for tag in include)


def candidate_rank(ctx: Context, record: EntryRecord) -> tuple[int, int]:
    """(standing, runnable) of a package entry, lowest first.

    standing: 0 for the built-in repo and the user's own entries, 1 for those of others (pulled or
    unzipped repos, entries marked by unzip); runnable: 0 for native packages, 1 for CK-format ones,
    which ``find_candidates`` refines per variation by CK install tier (``_ck_runnable``).
    """
    return entry_standing(ctx, record), 1 if record.ck_format else 0


def _ck_runnable(ctx: Context, candidate: Candidate, meta: dict) -> int:
    """The runnable rank of a CK-format candidate (``meta``: its package's own meta), after every native
    package: 1 for CK's native tier (ckx fetches or pip-installs it), 2 for CK scripts ckx may run, 3 for
    what ckx will not install."""
    record = candidate.record
    try:
        repo = ctx.registry.get(record.repo)
        tier, _ = install_tier(meta, record.path, repo, candidate.variation)
    except CkxError:
        return 3
    if tier == REFUSED:
        return 3
    if tier == CK_SCRIPT:
        return 2 if ck_scripts_allowed(repo, candidate.meta)[0] else 3
    return 1


def find_candidates(
    ctx: Context,
    *,
    tags: str | Sequence[str] | None = None,
    alias: str | None = None,
    repo: str | None = None,
    variation: str | None = None,
    version: str | None = None,
) -> list[Candidate]:
    """Every (package, variation) whose tags include ``tags`` (``-tag`` excludes), best rank first.

    A tag also matches when it names the candidate's variation or its version (``1.6.0``, ``v3.19.5``).
    ``alias`` (an alias, uid or wildcard) and ``repo`` narrow the packages; ``variation`` keeps only
    that variation; ``version`` keeps packages of that version (pip packages without a fixed
    version accept any: the version becomes their pin). Broken package metas are skipped with a warning.
    Within a rank (``candidate_rank``) the registry order is kept.
    """
    include, exclude = split_tags(tags)
    # The index narrows the packages to those whose meta text holds every tag (or a base to inherit from).
    records = find_entries(ctx, Cid(module="package", entry=alias, repo=repo), tags=[f"-{t}" for t in exclude],
                           loose_tags=[_needle(t) for t in include])
    found: list[Candidate] = []
    for record in records:
        indexed = record.meta
        if indexed.get("abstract"):
            continue  # a base that other packages inherit from (its meta and hook), never installed itself
        if not (indexed.get("base") or indexed.get("_base_entry")) and not _may_match(indexed, include):
            continue  # decided from the indexed meta: the meta file is not read for packages that cannot match
        try:
            base = merged_meta(ctx, record)
        except CkxError as exc:
            ctx.warn(f"skipping package {record.cid}: {exc}")
            continue
        ck_format = record.ck_format
        variations = base.get("variations") if isinstance(base.get("variations"), dict) else {}
        if not _may_match(base, include):
            continue
        names: list[str | None]
        if variation is not None:
            names = [variation] if variation in variations else []
        else:
            names = list(variations) or [None]
        rank: tuple[int, int] | None = None
        own_meta: dict | None = None
        for name in names:
            meta = apply_variation(base, name, ck_format=ck_format)
            candidate_tags = tuple(normalise_tags(meta.get("tags")))
            if set(exclude) & set(candidate_tags):
                continue
            if rank is None:
                rank = candidate_rank(ctx, record)
            candidate = Candidate(record, name, meta, candidate_tags,
                                  _is_default(base, name, ck_format=ck_format), rank)
            if not all(tag in candidate_tags or _selects(tag, candidate) for tag in include):
                continue
            if version is not None and not _version_accepts(candidate, version):
                continue
            if ck_format:
                if own_meta is None:  # once per package, for the tier of each variation
                    try:
                        own_meta = load_meta(record.meta_path)
                    except CkxError:
                        own_meta = {}  # unreadable now: ranks with what ckx will not install
                runnable = _ck_runnable(ctx, candidate, own_meta) if own_meta else 3
                candidate = dataclasses.replace(candidate, rank=(rank[0], runnable))
            found.append(candidate)
    found.sort(key=lambda c: c.rank)
    return found


def _version_accepts(candidate: Candidate, version: str) -> bool:
    if candidate.version is None:
        return (candidate.meta.get("source") or {}).get("kind") == "pip"
    return same_version(candidate.version, version)


def same_version(a: str, b: str) -> bool:
    # reason: packaging loads only where versions are compared (light start-up)
    from packaging.version import InvalidVersion, Version

    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def choose_candidate(ctx: Context, candidates: Sequence[Candidate], *, asked: str) -> Candidate:
    """One candidate among those of the best rank: the only one, the default one (said with ctx.info),
    the user's pick on a terminal, or Ambiguous.

    ``"default": true`` and default variations count only among candidates of that rank, so an entry
    from others can never become the default over a built-in or user entry. ``asked`` describes the
    request for messages (e.g. ``tags lib,python-package``).
    """
    if not candidates:
        raise NotFound(f"no package matches {asked}", hint="'ckx search package --tags=...' lists packages by tags")
    best = min(c.rank for c in candidates)
    top = [c for c in candidates if c.rank == best]
    if len(top) < len(candidates):
        passed = list(dict.fromkeys(c.record.cid for c in candidates if c.rank != best))
        log.debug("%s: %s rank after %s", asked, ", ".join(passed), ", ".join(dict.fromkeys(c.record.cid for c in top)))
    if len(top) == 1:
        return top[0]
    pool = list(top)
    packages = list(dict.fromkeys(c.record.path for c in pool))
    if len(packages) > 1:
        marked = [path for path in packages if any(c.record.path == path and c.meta.get("default") for c in pool)]
        if len(marked) == 1:
            pool = [c for c in pool if c.record.path == marked[0]]
    if len({c.record.path for c in pool}) == 1:
        if len(pool) == 1:
            ctx.info(f"{asked} matches several packages; using {pool[0].label}, marked as the default")
            return pool[0]
        defaults = [c for c in pool if c.is_default_variation]
        if len(defaults) == 1:
            ctx.info(f"{asked} matches {len(pool)} variations of {pool[0].record.cid}; "
                     f"using the default variation {defaults[0].variation}")
            return defaults[0]
    labels = [f"{c.label} [{','.join(c.tags)}]" for c in top]
    if ctx.interactive:
        picked = ctx.reporter.choose(f"{asked} matches several packages; which one?", labels, None)
        if picked is not None and 0 <= picked < len(top):
            return top[picked]
    records = list({c.record.path: c.record for c in top}.values())
    repos = list(dict.fromkeys(r.repo for r in records))
    count = len(records)
    raise Ambiguous(
        f"{asked} matches {count} package{'s' if count > 1 else ''}"
        + (f" in repos {join_names(repos)}" if len(repos) > 1 else "")
        + (f" ({len(top)} variations)" if len(top) > count else ""),
        labels,
        hint=_ambiguity_hint(top, records),
    )


def _ambiguity_hint(top: Sequence[Candidate], records: Sequence[EntryRecord]) -> str:
    """Forms that resolve: the package by repo and name (or uid), and the variation by name."""
    ways = []
    if len(records) > 1:
        more = f" (or another of the {len(records)} by REPO:package:NAME)" if len(records) > 3 else ""
        ways.append(f"name the package: ckx install {resolution_forms(list(records[:3]))}{more}")
    variations = list(dict.fromkeys(c.variation for c in top if c.variation))
    if variations:
        shown = ", ".join(variations[:6]) + (", ..." if len(variations) > 6 else "")
        ways.append(f"choose a variation with --variation=NAME (or a tag naming it): {shown}")
    ways.append("or add tags that only one of them has")
    return "; ".join(ways)


def choose_package(
    ctx: Context,
    *,
    tags: str | Sequence[str] | None = None,
    alias: str | None = None,
    variation: str | None = None,
    version: str | None = None,
    repo: str | None = None,
) -> Candidate:
    """The one package (and variation) that ``alias`` and/or ``tags`` name, checked installable.

    Raises UsageError (neither tags nor alias), NotFound, Ambiguous (exit 3), MetaError for a package
    whose meta says nothing ckx can install.
    """
    if not tags and not alias:
        raise UsageError("which package? give its alias or --tags",
                         hint="ckx install package:ALIAS | ckx install package --tags=a,b")
    asked = " ".join(filter(None, [f"package:{alias}" if alias else "", f"tags {_tag_text(tags)}" if tags else ""]))
    if variation:
        asked += f" variation {variation}"
    candidate = choose_candidate(
        ctx, find_candidates(ctx, tags=tags, alias=alias, repo=repo, variation=variation, version=version),
        asked=asked,
    )
    if is_ck_package(candidate.meta):
        tier, reason = install_tier(load_meta(candidate.record.meta_path), candidate.record.path,
                                    ctx.registry.get(candidate.record.repo), candidate.variation)
        if tier == REFUSED:
            raise MetaError(f"{candidate.record.meta_path}: ckx does not install CK package {candidate.label}: {reason}",
                            hint="'ckx search package --installable' lists the CK packages ckx installs and how")
        if tier == CK_SCRIPT:
            allowed, why = ck_scripts_allowed(ctx.registry.get(candidate.record.repo), candidate.meta)
            if not allowed:
                raise UsageError(f"{candidate.label} installs by running CK's scripts ({reason}); {why}",
                                 hint="pull the repo with 'ckx pull repo --url=...' or add it with 'ckx add repo:NAME --path=DIR'")
        return candidate  # a CK package: ckx.software.ckinstall plans its installation
    source = candidate.meta.get("source")
    if not isinstance(source, dict) or source.get("kind") not in SOURCE_KINDS:
        raise MetaError(
            f"{candidate.record.meta_path}: field 'source': package {candidate.label} says nothing ckx can install "
            f"(source.kind must be one of {', '.join(SOURCE_KINDS)})"
        )
    validate_meta(candidate.meta, "package", candidate.record.meta_path)
    return candidate


def _tag_text(tags: str | Sequence[str] | None) -> str:
    return tags if isinstance(tags, str) else ",".join(tags or ())
