"""Typed errors of the harness, each with the process exit status the entry point uses for it."""
from __future__ import annotations

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3


class HarnessError(Exception):
    """Base of every expected failure: printed as one ``error:`` line, never as a traceback."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(HarnessError):
    """A bad command-line option or a contradictory combination of options."""

    exit_code = EXIT_USAGE


class InputNotFound(HarnessError):
    """A file the run needs (image, val_map, model, conf, log) does not exist."""

    exit_code = EXIT_NOT_FOUND


class FormatError(HarnessError):
    """A file exists but cannot be read as what it should be (val_map line, image, log)."""


class ModelError(HarnessError):
    """A model file could not be loaded by the chosen backend, or it produced unusable output."""


class LoadGenError(HarnessError):
    """LoadGen refused the settings or produced no logs."""


class RuntimeMissing(HarnessError):
    """The framework a backend needs is not installed; the hint names the extra that installs it."""

    exit_code = EXIT_NOT_FOUND


class PrecisionUnsupported(HarnessError):
    """The precision asked for cannot run on this CPU or with this backend."""

    exit_code = EXIT_USAGE
