"""The environment engine: path variables, merging layers of variables, values as text, placeholders."""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ckx.core.errors import MetaError

# Variables that hold os.pathsep-separated search paths: a layer puts its items in front of what is
# there instead of replacing the variable. Every merge (install, run, virtual env, env.sh) uses this list.
PATH_VARIABLES = frozenset({
    "PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH", "LIBRARY_PATH", "CPATH", "C_INCLUDE_PATH",
    "CPLUS_INCLUDE_PATH", "PKG_CONFIG_PATH", "CMAKE_PREFIX_PATH", "MANPATH",
})
NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# {name} and {name:VAR} placeholders, $VAR and ${VAR} references, and the escapes {{ }} $$.
_TOKEN = re.compile(
    r"\{\{|\}\}|\$\$"
    r"|\{(?P<name>" + NAME + r")(?::(?P<var>" + NAME + r"))?\}"
    r"|\$\{(?P<braced>" + NAME + r")\}"
    r"|\$(?P<bare>" + NAME + r")"
)


def env_text(value: Any) -> str | None:
    """A variable's value as text: booleans are ``"1"`` and ``"0"``; None stays None (no variable)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def path_items(var: str, value: str) -> list[str]:
    """The items of a search-path value, without empty items and references to the variable itself.

    ``/opt/x/bin:$PATH`` gives ``["/opt/x/bin"]`` for PATH: a layer is always prepended, so the
    reference to the current value is implied.
    """
    refs = {f"${var}", f"${{{var}}}"}
    return [item for item in value.split(os.pathsep) if item and item not in refs]


def apply_layer(env: dict[str, str], layer: Mapping[str, Any]) -> None:
    """Apply one layer of variables to ``env`` in place.

    A search-path variable (``PATH_VARIABLES``) gets the layer's items in front of its current items,
    without duplicates; any other variable is replaced; a None value removes the variable. Values go
    through ``env_text``.
    """
    for var, raw in layer.items():
        value = env_text(raw)
        if value is None:
            env.pop(var, None)
        elif var in PATH_VARIABLES:
            items = path_items(var, value)
            rest = [item for item in path_items(var, env.get(var, "")) if item not in items]
            env[var] = os.pathsep.join(items + rest)
        else:
            env[var] = value


def merge_env(base: Mapping[str, str], layers: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """A copy of ``base`` with each layer applied in order (see ``apply_layer``)."""
    env = dict(base)
    for layer in layers:
        apply_layer(env, layer)
    return env


def render(
    text: str,
    values: Mapping[str, str | None],
    *,
    where: str,
    env: Mapping[str, str] | None = None,
    unavailable: Mapping[str, str] | None = None,
) -> tuple[str, bool]:
    """Expand the placeholders of ``text``; returns (expanded, complete).

    ``{name}`` takes ``values[name]``; ``{{`` and ``}}`` are literal braces. A name that ``values`` does
    not hold is a MetaError naming ``where``, the name and the known names; a name whose value is None is
    one too (``unavailable[name]`` says why). With ``env``, ``{env:VAR}``, ``${VAR}`` and ``$VAR`` read
    it and ``$$`` is a literal ``$``; ``complete`` is False when such a reference was unset or empty.
    Without ``env``, ``$`` is left alone (``$PATH`` in a search path is kept for the merge to drop).
    """
    complete = True

    def replace(match: re.Match) -> str:
        nonlocal complete
        token = match.group(0)
        if token.startswith("$") and env is None:
            return token
        if token in ("{{", "}}", "$$"):
            return token[0]
        name, var = match.group("name"), match.group("var")
        if name == "env" and env is not None:
            if var is None:
                raise MetaError(f"{where}: '{{env}}' needs a variable, as in '{{env:VAR}}'")
        elif name is not None:
            return _value(name, token, text, values, where, unavailable or {}, var)
        else:
            var = match.group("braced") or match.group("bare")
        value = (env or {}).get(var, "")
        if value == "":
            complete = False
        return value

    return _TOKEN.sub(replace, text), complete


def _value(name: str, token: str, text: str, values: Mapping[str, str | None], where: str,
           unavailable: Mapping[str, str], var: str | None) -> str:
    if var is not None or name not in values:
        known = ", ".join("{" + n + "}" for n in sorted(values))
        raise MetaError(f"{where}: unknown placeholder {token} in {text!r}; known: {known or 'none'}")
    value = values[name]
    if value is None:
        reason = unavailable.get(name)
        raise MetaError(f"{where}: {token} has no value here" + (f" ({reason})" if reason else ""))
    return value


def render_text(text: str, values: Mapping[str, str | None], *, where: str) -> str:
    """``render`` without an environment: the expanded text (for env templates of softs and packages)."""
    return render(text, values, where=where)[0]


__all__ = ["NAME", "PATH_VARIABLES", "apply_layer", "env_text", "merge_env", "path_items", "render", "render_text"]
