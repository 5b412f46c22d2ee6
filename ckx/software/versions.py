"""Versions: CK's version forms as text, version tags, comparison, and the ranges dependencies ask for."""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ckx.core.errors import UsageError

_AUTO_TAG_RE = re.compile(r"^(v\d[\w.+!-]*|host-os-.+|target-os-.+|\d+bits)$")


def version_text(version: Any) -> str | None:
    """A version as text: CK's int lists ``[2, 2, 0]`` become ``"2.2.0"``; None stays None."""
    if version is None or version == "":
        return None
    if isinstance(version, (list, tuple)):
        return ".".join(str(part) for part in version)
    return str(version).strip() or None


def version_split(version: str | None) -> list[int]:
    """The leading numeric parts of a version: ``"3.11.7"`` -> [3, 11, 7], ``"2.13.0+cpu"`` -> [2, 13, 0]."""
    if not version:
        return []
    parts = []
    for piece in re.split(r"[.]", version):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
        if match.end() != len(piece):
            break
    return parts


def version_tags(version: str | None) -> list[str]:
    """CK's version tags: ``"3.11.7"`` -> v3, v3.11, v3.11.7 (plus the full text when it has more)."""
    split = version_split(version)
    tags = [f"v{'.'.join(str(p) for p in split[:n])}" for n in range(1, len(split) + 1)]
    if version and f"v{version}" not in tags and re.fullmatch(r"[\w.+!-]+", version):
        tags.append(f"v{version}")
    return tags


def is_automatic_tag(tag: str) -> bool:
    """True for the tags every env gets by itself (version and platform tags)."""
    return bool(_AUTO_TAG_RE.match(tag))


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older, equal or newer than ``b`` (PEP 440 where both parse, else numeric parts)."""
    # reason: packaging loads only where versions are compared (light start-up)
    from packaging.version import InvalidVersion, Version

    try:
        va, vb = Version(a), Version(b)
    except InvalidVersion:
        ka, kb = version_split(a), version_split(b)
        return (ka > kb) - (ka < kb)
    return (va > vb) - (va < vb)


@dataclass(frozen=True)
class VersionRange:
    """``version_from`` and ``version_to`` (inclusive, CK's lists or strings) and a PEP 440 specifier."""

    low: str | None = None
    high: str | None = None
    specifier: str | None = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, where: str = "dependency") -> VersionRange:
        """Read ``version_from``/``version_to``/``version`` from a dependency; UsageError for a bad specifier.

        A ``version_from`` that starts with an operator (``">=1.24"``) is read as a specifier too.
        """
        low = spec.get("version_from")
        high = spec.get("version_to")
        specifiers = []
        if isinstance(low, str) and low.strip()[:1] in "<>=!~":
            specifiers.append(low.strip())
            low = None
        if isinstance(high, str) and high.strip()[:1] in "<>=!~":
            specifiers.append(high.strip())
            high = None
        if spec.get("version") and str(spec["version"]).strip()[:1] in "<>=!~":
            specifiers.append(str(spec["version"]).strip())
        elif spec.get("version"):
            specifiers.append("==" + str(spec["version"]).strip())
        text = ",".join(specifiers) or None
        if text:
            # reason: packaging loads only where versions are compared (light start-up)
            from packaging.specifiers import InvalidSpecifier, SpecifierSet

            try:
                SpecifierSet(text)
            except InvalidSpecifier:
                raise UsageError(f"{where}: invalid version specifier {text!r}",
                                 hint="use PEP 440 forms such as '>=1.24', '<3', '==2.13.*'") from None
        return cls(version_text(low), version_text(high), text)

    def __bool__(self) -> bool:
        return bool(self.low or self.high or self.specifier)

    def is_empty(self) -> bool:
        """True when ``version_from`` is above ``version_to``: nothing can satisfy it."""
        return bool(self.low and self.high and compare_versions(self.low, self.high) > 0)

    def contains(self, version: str | None) -> bool:
        """Whether ``version`` is inside the range (an unknown version is not, unless the range is open)."""
        if not self:
            return True
        if not version:
            return False
        if self.low and compare_versions(version, self.low) < 0:
            return False
        if self.high and compare_versions(version, self.high) > 0:
            return False
        if self.specifier:
            # reason: packaging loads only where versions are compared (light start-up)
            from packaging.specifiers import SpecifierSet
            from packaging.version import InvalidVersion, Version

            try:
                return Version(version) in SpecifierSet(self.specifier, prereleases=True)
            except InvalidVersion:
                return False
        return True

    def __str__(self) -> str:
        parts = []
        if self.low:
            parts.append(f">={self.low}")
        if self.high:
            parts.append(f"<={self.high}")
        if self.specifier:
            parts.append(self.specifier)
        return ",".join(parts) or "any"
