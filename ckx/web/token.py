"""The web API's bearer token: chosen or generated at start, kept in $CKX_HOME/serve-token (mode 0600), checked in constant time."""
from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from ckx.core.errors import CkxError, UsageError

TOKEN_ENV = "CKX_SERVE_TOKEN"
TOKEN_FILE = "serve-token"
TOKEN_BYTES = 32  # secrets.token_urlsafe(32): 43 characters, 256 bits
_NOT_IN_COOKIES = frozenset('",;\\')


def choose_token(given: str | None) -> str:
    """``given`` (from --token or $CKX_SERVE_TOKEN) checked, or a new random token when there is none.

    Raises UsageError for a token with whitespace, control or non-ASCII characters, or one of
    a double quote, comma, semicolon or backslash (it could not travel as typed in a header or a cookie).
    """
    if not given:
        return secrets.token_urlsafe(TOKEN_BYTES)
    if not given.isascii() or not given.isprintable() or any(c.isspace() or c in _NOT_IN_COOKIES for c in given):
        raise UsageError("--token must be printable ASCII without spaces or any of \" , ; \\",
                         hint=f"leave --token and ${TOKEN_ENV} out and a random one is made")
    return given


def token_matches(given: str | None, token: str) -> bool:
    """True when ``given`` is ``token``; the comparison takes the same time wherever they differ."""
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("utf-8"))


def store_token(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` readable by its owner only (0600), atomically; CkxError when it cannot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.unlink(missing_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(token + "\n")
        os.chmod(temporary, 0o600)  # the umask can only take bits away, but say it outright
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise CkxError(f"cannot write the token file {path}: {exc.strerror or exc}") from None


def forget_token(path: Path, token: str) -> None:
    """Delete ``path`` if it still holds ``token`` (another server may have replaced it since)."""
    try:
        if token_matches(path.read_text(encoding="ascii").strip(), token):
            path.unlink()
    except (OSError, UnicodeDecodeError):
        pass


__all__ = ["TOKEN_BYTES", "TOKEN_ENV", "TOKEN_FILE", "choose_token", "forget_token", "store_token", "token_matches"]
