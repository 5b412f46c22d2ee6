"""The catalog of known remote repos (``repos/catalog.json``): alias to git URL, and CK's ``owner@name`` rule."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ckx.core.errors import MetaError
from ckx.core.home import builtin_repo_path
from ckx.core.jsonio import read_json

CATALOG_SCHEMA_VERSION = 1
_OWNER_AT_NAME = re.compile(r"^([A-Za-z0-9_.-]+)@([A-Za-z0-9_.-]+)$")


@dataclass(frozen=True)
class CatalogEntry:
    """One known remote repo: the name users pull it by, its git URL and its format."""

    name: str
    url: str
    format: str = "ck"
    description: str = ""
    aliases: tuple[str, ...] = ()


def catalog_path() -> Path:
    """``repos/catalog.json`` of the ckx installation (the built-in repo's root)."""
    return builtin_repo_path() / "repos" / "catalog.json"


def load_catalog(path: Path | None = None) -> dict[str, CatalogEntry]:
    """The catalog of known repos, keyed by every name and alias; empty when the file is missing.

    Raises MetaError naming the file when it is malformed or of a newer schema version.
    """
    path = path or catalog_path()
    if not path.is_file():
        return {}
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("repos"), dict):
        raise MetaError(f"{path}: expected an object with a 'repos' object")
    version = data.get("schema_version")
    if not isinstance(version, int) or version > CATALOG_SCHEMA_VERSION:
        raise MetaError(f"{path}: field 'schema_version': {version!r} is not a version this ckx reads (1)")
    catalog: dict[str, CatalogEntry] = {}
    for name, item in data["repos"].items():
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            raise MetaError(f"{path}: field 'repos.{name}.url' must be a string")
        entry = CatalogEntry(name, item["url"], str(item.get("format", "ck")), str(item.get("description", "")),
                             tuple(str(a) for a in item.get("aliases", ())))
        for key in (name, *entry.aliases):
            catalog[key] = entry
    return catalog


def url_for_alias(alias: str, catalog: dict[str, CatalogEntry]) -> tuple[str, str] | None:
    """(URL, where it came from) for a repo alias: the catalog, else CK's ``owner@name`` GitHub rule."""
    entry = catalog.get(alias)
    if entry is not None:
        return entry.url, f"the catalog ({entry.name})"
    match = _OWNER_AT_NAME.match(alias)
    if match:
        return f"https://github.com/{match.group(1)}/{match.group(2)}", "the owner@name rule (GitHub)"
    return None
