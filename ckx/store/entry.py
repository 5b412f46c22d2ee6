"""Entries: meta validation against the kind's JSON Schema, fresh loads, base-entry merging, provenance marks."""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from ckx.core.errors import MetaError
from ckx.core.jsonio import read_meta_file

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
META_SCHEMA_VERSION = 1
# An entry that arrived from others inside one of the user's own repos (unzipped into local, say) carries
# this mark in its meta; resolution ranks it with the entries of pulled and unzipped repos.
PROVENANCE_KEY = "provenance"
FOREIGN_ORIGINS = ("pulled", "unzipped")


@lru_cache(maxsize=None)
def _validator(kind: str):
    import jsonschema  # lazily: validation happens on writes, not on start-up
    from referencing import Registry, Resource  # lazily, with jsonschema

    resources = []
    for path in SCHEMA_DIR.glob("*.json"):
        resources.append((path.name, Resource.from_contents(json.loads(path.read_text()))))
    registry = Registry().with_resources(resources)
    name = f"{kind}.json" if (SCHEMA_DIR / f"{kind}.json").is_file() else "common.json"
    schema = json.loads((SCHEMA_DIR / name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    # Formats are checked too ("format": "regex" must compile).
    return cls(schema, registry=registry, format_checker=cls.FORMAT_CHECKER)


def validate_meta(meta: Any, kind: str, source: str | Path) -> None:
    """Check ``meta`` against the schema of ``kind``; MetaError names ``source`` and the failing field."""
    validator = _validator(kind)
    errors = sorted(validator.iter_errors(meta), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if not errors:
        return
    lines = []
    for error in errors[:5]:
        field = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        lines.append(f"{source}: field '{field}': {error.message}")
    more = f"\n  ... and {len(errors) - 5} more" if len(errors) > 5 else ""
    raise MetaError("invalid meta:\n  " + "\n  ".join(lines) + more)


def load_meta(meta_path: Path) -> dict:
    """The meta of an entry, read fresh from disk."""
    return read_meta_file(meta_path)


def deep_merge(base: dict, override: dict) -> dict:
    """A new dict: ``override`` merged into ``base``; nested dicts merge, everything else replaces."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def normalise_tags(tags: Any) -> list[str]:
    """Tags from a list or a comma-separated string, stripped, without duplicates, order kept."""
    if tags is None:
        return []
    items = tags.split(",") if isinstance(tags, str) else list(tags)
    return list(dict.fromkeys(str(t).strip() for t in items if str(t).strip()))


def mark_foreign(meta: dict, origin: str, source: str) -> dict:
    """Mark ``meta`` (in place, and returned) as that of an entry that came from others.

    ``origin`` is "unzipped" (``source``: the archive) or "pulled" (``source``: the URL). Whatever
    provenance the meta already carried is replaced: an archive cannot vouch for itself. Raises
    ValueError for another origin.
    """
    if origin not in FOREIGN_ORIGINS:
        raise ValueError(f"origin must be one of {', '.join(FOREIGN_ORIGINS)}, not {origin!r}")
    meta[PROVENANCE_KEY] = {"origin": origin, "source": str(source)}
    return meta


def foreign_origin(meta: Any) -> str | None:
    """The origin a provenance mark gives the entry ("pulled" or "unzipped"), or None when it has no mark.

    A mark can only lower an entry's standing: any mark at all says the entry came from others, and one
    whose origin is not a foreign one reads as "unzipped".
    """
    mark = meta.get(PROVENANCE_KEY) if isinstance(meta, dict) else None
    if not mark:
        return None
    origin = mark.get("origin") if isinstance(mark, dict) else None
    return origin if origin in FOREIGN_ORIGINS else "unzipped"
