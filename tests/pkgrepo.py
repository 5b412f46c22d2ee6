"""Package entries in a native repo registered in a test's throwaway CKX_HOME, and what an install left behind."""
from __future__ import annotations

import json
import secrets
import textwrap
from pathlib import Path

from ckx.api import access

TAG = "pkgrepotest"


class PackageRepo:
    """A native repo registered (as ``name``) in the context's home; ``add`` writes a package entry into it."""

    def __init__(self, ctx, root: Path, *, name: str = "testpackages") -> None:
        result = access({"action": "add", "module": "repo", "entry": name, "path": str(root)}, context=ctx)
        assert result["return"] == 0, result
        self.ctx = ctx
        self.root = root

    def add(self, alias: str, *, source: dict, hook: str | None = None, module: str = "packages",
            **meta: object) -> Path:
        """Write ``packages/ALIAS`` (meta, and ``install.py`` from ``hook``); return the entry directory."""
        entry = self.root / module / alias
        entry.mkdir(parents=True)
        full = {"alias": alias, "uid": secrets.token_hex(8), "schema_version": 1, "tags": [TAG, alias],
                "soft": "test.pkgrepo", "source": source, **meta}
        (entry / "meta.json").write_text(json.dumps(full, indent=1))
        if hook is not None:
            (entry / "install.py").write_text(textwrap.dedent(hook))
        self.ctx.index.refresh(["package"], force=True)
        return entry


def env_records(home: Path) -> list[dict]:
    """The env records on disk (not through the index, which could be stale)."""
    envs = home / "repos" / "local" / "envs"
    if not envs.is_dir():
        return []
    return [json.loads((d / "meta.json").read_text()) for d in sorted(envs.iterdir()) if (d / "meta.json").is_file()]


def tools_left(home: Path) -> list[str]:
    """Everything in the home's tools directory (staging directories included)."""
    tools = home / "tools"
    return sorted(p.name for p in tools.iterdir()) if tools.is_dir() else []


def assert_nothing_installed(home: Path) -> None:
    """No directory in tools and no env recorded for a test package."""
    assert tools_left(home) == []
    assert [m for m in env_records(home) if TAG in (m.get("tags") or [])] == []


def cached_downloads(home: Path) -> list[str]:
    """The files in the download cache (``.lock`` files aside), relative to it."""
    root = home / "cache" / "downloads"
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def write_limits(home: Path, **limits: int) -> None:
    """Set ``limits`` in the home's settings.json (keeping its other keys)."""
    path = home / "settings.json"
    settings = json.loads(path.read_text()) if path.is_file() else {}
    settings.setdefault("limits", {}).update(limits)
    path.write_text(json.dumps(settings))
