"""The layout of $CKX_HOME: registry, local repo, tools, caches, runs, venvs, index."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BUILTIN_REPO_NAME = "builtin"
LOCAL_REPO_NAME = "local"


def builtin_repo_path() -> Path:
    """The project root that ships with ckx: it holds the built-in packages, soft and programs.

    ``$CKX_BUILTIN_REPO`` overrides it (used to relocate an installed copy).
    """
    override = os.environ.get("CKX_BUILTIN_REPO")
    if override:
        return Path(override).resolve()
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Home:
    """Paths under one ckx home directory. Nothing here touches the disk until ``ensure``."""

    root: Path

    @classmethod
    def from_env(cls, environ: dict | None = None) -> "Home":
        """The home named by ``$CKX_HOME``, or ``~/.ckx``."""
        env = os.environ if environ is None else environ
        value = env.get("CKX_HOME")
        root = Path(value).expanduser() if value else Path.home() / ".ckx"
        return cls(root.resolve())

    @property
    def repos_json(self) -> Path:
        return self.root / "repos.json"

    @property
    def repos_dir(self) -> Path:
        return self.root / "repos"

    @property
    def local_repo(self) -> Path:
        return self.repos_dir / LOCAL_REPO_NAME

    @property
    def tools(self) -> Path:
        override = os.environ.get("CKX_TOOLS")
        return Path(override).expanduser().resolve() if override else self.root / "tools"

    @property
    def downloads(self) -> Path:
        return self.root / "cache" / "downloads"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def venvs(self) -> Path:
        return self.root / "venvs"

    @property
    def index_path(self) -> Path:
        return self.root / "index.sqlite"

    @property
    def settings_path(self) -> Path:
        return self.root / "settings.json"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    def ensure(self) -> None:
        """Create the directories every action may need."""
        for path in (self.root, self.repos_dir, self.locks):
            path.mkdir(parents=True, exist_ok=True)
