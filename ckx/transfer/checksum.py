"""File digests and the Checker that verifies a file against the digest its meta declares."""
from __future__ import annotations

import hashlib
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ckx.core.errors import ChecksumMismatch, MetaError

CHUNK_SIZE = 1 << 20

# Strongest first: from_meta() takes the first one a meta declares.
ALGORITHMS: tuple[str, ...] = ("sha512", "sha256", "sha1", "md5")

_HEX_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}


def new_hash(algorithm: str) -> "hashlib._Hash":
    """A fresh hash object for one of ``ALGORITHMS``; raises MetaError for any other name."""
    name = algorithm.lower()
    if name not in _HEX_LENGTHS:
        raise MetaError(
            f"unsupported checksum algorithm {algorithm!r}",
            hint=f"use one of: {', '.join(ALGORITHMS)}",
        )
    return hashlib.new(name)


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """The lowercase hex digest of a file, read in 1 MiB chunks (memory stays flat for any size)."""
    hasher = new_hash(algorithm)
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK_SIZE):
            hasher.update(chunk)
    return hasher.hexdigest()


@dataclass(frozen=True)
class Checker:
    """An expected digest: ``Checker("sha256", "ab12...").check(path)`` raises if the file differs.

    The algorithm and the digest are normalised to lowercase; a digest of the wrong length or
    with non-hex characters is a MetaError, so a typo in a meta file fails loudly and early.
    """

    algorithm: str
    expected: str

    def __post_init__(self) -> None:
        algorithm = str(self.algorithm).strip().lower()
        expected = str(self.expected).strip().lower()
        new_hash(algorithm)  # validates the name
        if len(expected) != _HEX_LENGTHS[algorithm] or not all(c in string.hexdigits for c in expected):
            raise MetaError(
                f"invalid {algorithm} digest {self.expected!r}: "
                f"expected {_HEX_LENGTHS[algorithm]} hex digits"
            )
        object.__setattr__(self, "algorithm", algorithm)
        object.__setattr__(self, "expected", expected)

    @classmethod
    def from_meta(cls, meta: Mapping[str, object] | None) -> "Checker | None":
        """The Checker for the strongest digest a meta dict declares, or None when it has none.

        Keys are the algorithm names (``{"md5": "...", "sha256": "..."}`` gives a sha256 Checker);
        empty values are ignored.
        """
        if not meta:
            return None
        for algorithm in ALGORITHMS:
            value = meta.get(algorithm)
            if value:
                return cls(algorithm, str(value))
        return None

    def digest(self, path: str | os.PathLike[str]) -> str:
        """The digest of ``path`` with this checker's algorithm."""
        return file_digest(path, self.algorithm)

    def matches(self, path: str | os.PathLike[str]) -> bool:
        """True when ``path`` has the expected digest (a missing file does not match)."""
        try:
            return self.digest(path) == self.expected
        except FileNotFoundError:
            return False

    def check(self, path: str | os.PathLike[str], *, display_name: str | None = None) -> str:
        """Stream ``path`` and return its digest; raise ChecksumMismatch when it is not the expected one.

        ``display_name`` is the name the error reports (e.g. the final file for a ``.part``).
        """
        actual = self.digest(path)
        self.verify_digest(actual, display_name or str(Path(path)))
        return actual

    def verify_digest(self, actual: str, name: str) -> None:
        """Raise ChecksumMismatch naming ``name`` when ``actual`` is not the expected digest."""
        if actual.lower() != self.expected:
            raise ChecksumMismatch(name, self.algorithm, self.expected, actual.lower())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.expected}"
