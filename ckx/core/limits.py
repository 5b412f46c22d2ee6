"""Bounds on what others send: meta files, archives, downloads and web requests, with settings.json overrides."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ckx.core.errors import MetaError

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


@dataclass(frozen=True)
class Limits:
    """Every bound ckx puts on input it did not write itself.

    The defaults are generous for real benchmarking data (the full ImageNet validation tar is 6.4 GB,
    the largest meta in mlcommons@ck-mlops is 24 KB and 8 levels deep) and small enough that a hostile
    archive, meta or request cannot exhaust the disk, the memory or the interpreter's stack.
    ``$CKX_HOME/settings.json`` key ``"limits"`` overrides any of them.
    """

    meta_max_bytes: int = 4 * MIB
    meta_max_depth: int = 64
    archive_max_bytes: int = 64 * GIB
    archive_max_ratio: int = 200
    archive_max_members: int = 200_000
    download_max_bytes: int = 64 * GIB
    request_max_bytes: int = 4 * MIB
    request_max_depth: int = 64
    request_max_items: int = 1000
    request_max_url_bytes: int = 8 * KIB
    request_max_headers: int = 64
    request_max_header_bytes: int = 32 * KIB
    request_timeout_s: float = 30.0
    request_idle_s: float = 5.0
    server_workers: int = 8

    @classmethod
    def from_settings(cls, settings_path: Path) -> "Limits":
        """The defaults overlaid by the ``"limits"`` object of ``settings_path`` (absent file: defaults).

        Raises MetaError naming the file and the key for an unknown key or a value that is not a
        positive number.
        """
        try:
            text = settings_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise MetaError(f"{settings_path}: cannot be read ({exc.strerror})") from None
        try:
            settings = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MetaError(f"{settings_path}: invalid JSON at line {exc.lineno} column {exc.colno}") from None
        if not isinstance(settings, dict):
            raise MetaError(f"{settings_path}: the top level must be an object")
        overrides = settings.get("limits", {})
        if not isinstance(overrides, dict):
            raise MetaError(f"{settings_path}: field 'limits' must be an object")
        return cls().replaced(overrides, source=f"{settings_path}: field 'limits'")

    def replaced(self, overrides: dict[str, Any], *, source: str = "limits") -> "Limits":
        """A copy with ``overrides`` applied; MetaError naming ``source`` and the key for a bad one."""
        fields = {field.name: field.type for field in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in fields:
                known = ", ".join(sorted(fields))
                raise MetaError(f"{source}: unknown limit {key!r}", hint=f"known limits: {known}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise MetaError(f"{source}.{key}: must be a positive number, not {value!r}")
            changes[key] = float(value) if fields[key] == "float" else int(value)
        return dataclasses.replace(self, **changes)


DEFAULT_LIMITS = Limits()


def nesting_depth(value: Any) -> int:
    """How deeply ``value`` nests lists and dicts (a scalar is 0), computed without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


_HOME_LIMITS: dict[Path, tuple[int | None, Limits]] = {}


def home_limits(settings_path: Path | None = None) -> Limits:
    """The limits of a home: its settings.json (default: that of ``$CKX_HOME``, the home this process works
    in) over the defaults. Read again whenever the file changes; no file gives the defaults."""
    if settings_path is None:
        from ckx.core.home import Home  # lazily: limits must not need a home to be defined

        settings_path = Home.from_env().settings_path
    try:
        stamp: int | None = settings_path.stat().st_mtime_ns
    except OSError:
        stamp = None
    cached = _HOME_LIMITS.get(settings_path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    limits = DEFAULT_LIMITS if stamp is None else Limits.from_settings(settings_path)
    _HOME_LIMITS[settings_path] = (stamp, limits)
    return limits
