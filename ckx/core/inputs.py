"""Action inputs from the CLI (strings) or from access() (any JSON): dotted keys and CK's booleans."""
from __future__ import annotations

from typing import Any

from ckx.core.errors import UsageError

_TRUE = frozenset({"1", "true", "yes", "on", "y"})
_FALSE = frozenset({"0", "false", "no", "off", "n", ""})


def as_bool(value: Any, name: str) -> bool:
    """A flag: absent, True (``--flag``) or a string such as yes/no (CK wrote ``--overwrite=yes``).

    The one boolean convention: the ``bool`` options of ckx.core.options use it. Raises UsageError naming
    ``--name`` for anything else.
    """
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise UsageError(f"--{name} takes yes or no, not {value!r}")


def set_dotted(target: dict, key: str, value: Any) -> None:
    """``set_dotted(d, "env.X", 1)`` gives ``{"env": {"X": 1}}``; a scalar in the way is an error."""
    parts = key.split(".")
    if any(not p for p in parts):
        raise UsageError(f"invalid option name --{key}")
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise UsageError(f"--{key} conflicts with --{part} given as a plain value")
        node = child
    node[parts[-1]] = value


def deep_update(target: dict, source: dict) -> None:
    """Merge ``source`` into ``target`` in place: nested dicts merge, other values replace."""
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            deep_update(target[key], value)
        else:
            target[key] = value
