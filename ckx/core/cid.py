"""CID parsing: ``[repo:]module[:entry]`` with ``*``/``?`` wildcards, and uid helpers."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ckx.core.errors import UsageError

UID_RE = re.compile(r"^[0-9a-f]{16}$")
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+@=\-]*$")
WILDCARDS = ("*", "?")


def new_uid() -> str:
    """A fresh uid: 16 lowercase hex digits, as CK uses."""
    return os.urandom(8).hex()  # what secrets.token_hex does, without its start-up cost


def is_uid(text: str) -> bool:
    """True when ``text`` is 16 lowercase hex digits (CK takes any such string as a uid)."""
    return bool(UID_RE.match(text))


def has_wildcard(text: str | None) -> bool:
    return bool(text) and any(w in text for w in WILDCARDS)


def check_name(name: str, what: str = "entry name") -> str:
    """Refuse names that could escape a directory or break the CLI grammar."""
    if not name or name in (".", "..") or not NAME_RE.match(name):
        raise UsageError(
            f"invalid {what}: {name!r}",
            hint="names use letters, digits and _ . + @ = - and do not start with a dot or a dash",
        )
    return name


@dataclass(frozen=True)
class Cid:
    """A parsed CID. ``module`` may be None only for a bare repo-less query; parts may hold wildcards."""

    module: str | None
    entry: str | None = None
    repo: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Cid":
        """Parse ``module``, ``module:entry`` or ``repo:module:entry``.

        Raises UsageError for empty parts, too many parts, or path separators.
        """
        if not text:
            raise UsageError("empty CID", hint="a CID is [repo:]module[:entry], e.g. package:model-resnet50-mlperf-onnx")
        if "/" in text or "\\" in text or ".." in text.split(":"):
            raise UsageError(f"invalid CID {text!r}: path separators and '..' are not allowed")
        parts = text.split(":")
        if len(parts) > 3 or any(p == "" for p in parts[:-1]):
            raise UsageError(f"invalid CID {text!r}", hint="a CID is [repo:]module[:entry]")
        if len(parts) == 1:
            return cls(module=parts[0])
        if len(parts) == 2:
            return cls(module=parts[0], entry=parts[1] or None)
        return cls(repo=parts[0], module=parts[1], entry=parts[2] or None)

    def __str__(self) -> str:
        text = self.module or ""
        if self.entry:
            text += ":" + self.entry
        if self.repo:
            text = self.repo + ":" + text
        return text
