"""Reporters: how the library tells its caller what happens (messages, warnings, output, progress, choices)."""
from __future__ import annotations

import logging
from typing import Sequence

log = logging.getLogger(__name__)


class Progress:
    """A progress handle; the base one ignores updates."""

    def update(self, amount: int) -> None:  # noqa: D401 - trivial
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Reporter:
    """Receives events from the library. This base records them and prints nothing.

    The CLI installs a subclass that writes to the terminal; access() keeps this one,
    so its messages come back in the result under ``messages`` and ``warnings``.
    """

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.warnings: list[str] = []

    def info(self, message: str) -> None:
        """A line of human information (what was chosen, what was done)."""
        self.messages.append(message)

    def warning(self, message: str) -> None:
        """Something went wrong but the action goes on."""
        self.warnings.append(message)
        log.warning(message)

    def output(self, line: str, *, stream: str = "stdout") -> None:
        """One line of a running program's output, streamed."""

    def progress(self, description: str, total: int | None = None, *, unit: str = "B") -> Progress:
        """A progress bar for a long step; ``total`` may be unknown (None)."""
        return Progress()

    def choose(self, question: str, options: Sequence[str], default: int | None = None) -> int | None:
        """Ask the user to pick one option. Non-interactive reporters return None."""
        return None
