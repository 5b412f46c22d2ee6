"""Choosing a package: its candidates (a package entry with one variation applied, base entries merged) by tags.

This is the one package matcher: ``ckx install`` and the resolver both choose among ``find_candidates``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ckx.core.cid import Cid
from ckx.core.errors import Ambiguous, CkxError, MetaError, NotFound, UsageError
from ckx.store.context import Context
from ckx.store.entry import deep_merge, load_meta, normalise_tags, validate_meta
from ckx.store.generic import find_entries, merged_meta
from ckx.store.index import EntryRecord, split_tags
from ckx.software.ckpackage import CK_SCRIPT, REFUSED, ck_scripts_allowed, install_tier, is_ck_package

SOURCE_KINDS = ("download", "pip", "hook")


@dataclass(frozen=True)
class Candidate:
    """One installable choice: a package entry with one of its variations (or none) applied."""

    record: EntryRecord
    variation: str | None
    meta: dict
    tags: tuple[str, ...]
    is_default_variation: bool = False

    @property
    def name(self) -> str:
        """The package's alias (its uid when it has none): what env records call the package."""
        return self.record.alias or self.record.uid or self.record.path.name

    @property
    def version(self) -> str | None:
        value = self.meta.get("version")
        return None if value is None else str(value)

    @property
    def label(self) -> str:
        """``repo:package:alias`` plus the variation, for messages."""
        return self.record.cid + (f" (variation {self.variation})" if self.variation else "")


def apply_variation(base: dict, variation: str | None) -> dict:
    """The package meta with one variation deep-merged over it; the variation's tags are appended.

    Raises NotFound when the package has no such variation.
    """
    meta = {key: value for key, value in base.items() if key != "variations"}
    if variation is None:
        return meta
    variations = base.get("variations") or {}
    if variation not in variations:
        known = ", ".join(sorted(variations)) or "none"
        name = base.get("alias") or base.get("uid")
        raise NotFound(f"package {name} has no variation {variation!r} (it has: {known})")
    spec = dict(variations[variation])
    extra_tags = normalise_tags(spec.pop("tags", None))
    spec.pop("default", None)
    merged = deep_merge(meta, spec)
    merged["tags"] = normalise_tags(list(normalise_tags(meta.get("tags"))) + extra_tags)
    return merged


def find_candidates(
    ctx: Context,
    *,
    tags: str | Sequence[str] | None = None,
    alias: str | None = None,
    repo: str | None = None,
    variation: str | None = None,
    version: str | None = None,
) -> list[Candidate]:
    """Every (package, variation) whose tags include ``tags`` (``-tag`` excludes), in registry order.

    ``alias`` (an alias, uid or wildcard) and ``repo`` narrow the packages; ``variation`` keeps only
    that variation; ``version`` keeps packages of that version (pip packages without a fixed
    version accept any: the version becomes their pin). Broken package metas are skipped with a warning.
    """
    include, exclude = split_tags(tags)
    records = find_entries(ctx, Cid(module="package", entry=alias, repo=repo))
    found: list[Candidate] = []
    for record in records:
        try:
            if load_meta(record.meta_path).get("abstract"):
                continue  # a base that other packages inherit from (its meta and hook), never installed itself
            base = merged_meta(ctx, record)
        except CkxError as exc:
            ctx.warn(f"skipping package {record.cid}: {exc}")
            continue
        variations = base.get("variations") or {}
        names: list[str | None]
        if variation is not None:
            names = [variation] if variation in variations else []
        else:
            names = list(variations) or [None]
        for name in names:
            meta = apply_variation(base, name)
            candidate_tags = tuple(normalise_tags(meta.get("tags")))
            if not set(include) <= set(candidate_tags) or set(exclude) & set(candidate_tags):
                continue
            spec = (variations.get(name) or {}) if name else {}
            default = name is not None and (base.get("default_variation") == name or bool(spec.get("default")))
            candidate = Candidate(record, name, meta, candidate_tags, default)
            if version is not None and not _version_accepts(candidate, version):
                continue
            found.append(candidate)
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
    """One candidate: the only one, the default one (said with ctx.info), the user's pick, or Ambiguous.

    ``asked`` describes the request for messages (e.g. ``tags lib,python-package``).
    """
    if not candidates:
        raise NotFound(f"no package matches {asked}", hint="'ckx search package --tags=...' lists packages by tags")
    if len(candidates) == 1:
        return candidates[0]
    pool = list(candidates)
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
    labels = [f"{c.label} [{','.join(c.tags)}]" for c in candidates]
    if ctx.interactive:
        picked = ctx.reporter.choose(f"{asked} matches several packages; which one?", labels, None)
        if picked is not None and 0 <= picked < len(candidates):
            return candidates[picked]
    count = len({c.record.path for c in candidates})
    raise Ambiguous(
        f"{asked} matches {count} package{'s' if count > 1 else ''}"
        + (f" ({len(candidates)} variations)" if len(candidates) > count else ""),
        labels,
        hint="add tags or --variation=NAME to choose one, or name it: ckx install package:ALIAS",
    )


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
            allowed, why = ck_scripts_allowed(ctx.registry.get(candidate.record.repo), ctx.home.repos_dir)
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
