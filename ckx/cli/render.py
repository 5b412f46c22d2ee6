"""Human text for action results; the data itself is what --json prints."""
from __future__ import annotations

import json

from ckx.core.text import table


def render(inp: dict, result: dict) -> str:
    """Text for a result: its "text", else a table, entries, tags, modules or a path, in that order."""
    if result.get("text"):
        return str(result["text"])
    if inp.get("action") == "load" and "meta" in result:
        return json.dumps(result["meta"], indent=2, sort_keys=True)
    if isinstance(result.get("table"), dict):
        spec = result["table"]
        return table(spec.get("columns", []), spec.get("rows", []))
    if "entries" in result and isinstance(result["entries"], list):
        entries = result["entries"]
        if inp.get("action") == "find" or inp.get("paths"):
            return "\n".join(e["path"] for e in entries)
        if inp.get("long"):
            return table(["cid", "uid", "tags"], [[e["cid"], e["uid"], ",".join(e["tags"])] for e in entries])
        return "\n".join(f"{e['cid']}" for e in entries)
    if isinstance(result.get("tags"), dict):
        return "\n".join(f"{tag} ({count})" for tag, count in result["tags"].items())
    if isinstance(result.get("modules"), dict):
        return table(["module", "entries"], [[m, n] for m, n in sorted(result["modules"].items())])
    if result.get("path"):
        return str(result["path"])
    return ""
