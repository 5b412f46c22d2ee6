"""Typed errors with exit codes: the library raises them, the CLI prints them once."""
from __future__ import annotations

from typing import Iterable, Sequence

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_RESOLUTION = 4
EXIT_INTEGRITY = 5
EXIT_PROGRAM_FAILED = 6
EXIT_INTERRUPTED = 130


class CkxError(Exception):
    """Base of every error ckx reports to a user.

    ``message`` says what went wrong; ``hint`` (optional) says what to do next.
    ``exit_code`` is the process exit status the CLI uses for it.
    """

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        """The access() form of this error: ``{"return": code, "error": ..., "hint"?: ...}``."""
        out: dict = {"return": self.exit_code, "error": self.message, "error_type": type(self).__name__}
        if self.hint:
            out["hint"] = self.hint
        return out


class UsageError(CkxError):
    """Bad command line or input: unknown action or module, malformed argument."""

    exit_code = EXIT_USAGE


class NotFound(CkxError):
    """An entry, repo, file or env that was asked for does not exist."""

    exit_code = EXIT_NOT_FOUND


class Ambiguous(CkxError):
    """A name matched several entries (or packages) and nothing may choose for the user."""

    exit_code = EXIT_NOT_FOUND

    def __init__(self, message: str, candidates: Sequence[str], *, hint: str | None = None) -> None:
        listing = "\n".join(f"  {c}" for c in candidates)
        super().__init__(f"{message}; candidates:\n{listing}" if candidates else message, hint=hint)
        self.candidates = list(candidates)

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["candidates"] = self.candidates
        return out


class ResolutionError(CkxError):
    """A dependency could not be satisfied, or dependencies conflict or form a cycle."""

    exit_code = EXIT_RESOLUTION


class IntegrityError(CkxError):
    """Downloaded or archived data failed a safety or checksum check."""

    exit_code = EXIT_INTEGRITY


class ChecksumMismatch(IntegrityError):
    """A file's digest differs from the one its meta declares."""

    def __init__(self, path: str, algorithm: str, expected: str, actual: str, *, hint: str | None = None) -> None:
        super().__init__(
            f"checksum mismatch for {path}: expected {algorithm} {expected}, got {actual}",
            hint=hint or "the file is corrupt or not the one the package describes; nothing was installed",
        )
        self.path = path
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual


class UnsafeArchive(IntegrityError):
    """An archive member would escape the target directory (absolute name, '..', or a link out)."""


class DownloadError(CkxError):
    """Every URL of a download failed (network error, HTTP error)."""

    def __init__(self, message: str, attempts: Iterable[str] = (), *, hint: str | None = None) -> None:
        attempts = list(attempts)
        if attempts:
            message = message + "\n" + "\n".join(f"  {a}" for a in attempts)
        super().__init__(message, hint=hint)
        self.attempts = attempts


class MetaError(CkxError):
    """A meta file is unreadable or fails its schema; the message names the file and the field."""


class ProgramFailed(CkxError):
    """A program's command exited non-zero; the message names its log."""

    exit_code = EXIT_PROGRAM_FAILED


class Interrupted(CkxError):
    """The user interrupted the action."""

    exit_code = EXIT_INTERRUPTED
