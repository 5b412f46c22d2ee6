"""The explicit context every action receives: home, registry, index, reporter, prompting policy."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ckx.core.home import Home
from ckx.core.report import Reporter

if TYPE_CHECKING:  # imported lazily at run time to keep start-up light
    from ckx.store.index import Index
    from ckx.store.repo import Registry


class Context:
    """Everything an action needs, passed explicitly (no process-wide singletons)."""

    def __init__(
        self,
        home: Home | None = None,
        *,
        reporter: Reporter | None = None,
        quiet: bool = False,
        interactive: bool | None = None,
    ) -> None:
        self.home = home or Home.from_env()
        self.reporter = reporter or Reporter()
        self.quiet = quiet
        if interactive is None:
            interactive = _stdin_is_tty()
        self.interactive = bool(interactive) and not quiet
        self._registry: Registry | None = None
        self._registry_stamp: int | None = None
        self._index: Index | None = None

    @property
    def registry(self) -> "Registry":
        """The repos known to this home (built-in, local, registered ones)."""
        if self._registry is None:
            from ckx.store.repo import Registry  # lazily: `ckx version` and `ckx help` never read repos

            self.home.ensure()
            self._registry_stamp = self._repos_json_stamp()
            self._registry = Registry.load(self.home)
        return self._registry

    def _repos_json_stamp(self) -> int | None:
        try:
            return self.home.repos_json.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def expire(self) -> None:
        """Let the next query look at the disk again (for long-lived contexts, such as the web service's).

        The registry is re-read only if repos.json changed; otherwise the index connection is kept and
        only re-checks what changed.
        """
        if self._registry is not None and self._repos_json_stamp() != self._registry_stamp:
            self.forget_registry()
        elif self._index is not None:
            self._index.expire()

    @property
    def index(self) -> "Index":
        """The SQLite index over every registered repo, refreshed on first use."""
        if self._index is None:
            from ckx.store.index import Index  # lazily: sqlite3 and the index cost start-up time

            self._index = Index(self.home, self.registry, warn=self.warn)
        return self._index

    def forget_registry(self) -> None:
        """Drop the cached registry and index after repos were added or removed."""
        if self._index is not None:
            self._index.close()
        self._registry = None
        self._index = None

    def warn(self, message: str) -> None:
        self.reporter.warning(message)

    def info(self, message: str) -> None:
        self.reporter.info(message)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, AttributeError):
        return False
