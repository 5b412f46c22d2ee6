"""Declared action options: one spec per option and one parser that types and checks a request once."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from ckx.core.errors import UsageError
from ckx.core.inputs import as_bool

# The value a dotted-map entry given as a bare flag (``--env.FOO``) takes: CK's "yes".
FLAG_VALUE = "yes"

# Inputs the dispatcher fills itself (from CIDs, ``--`` and access()'s own keys): never "unknown".
RESERVED = frozenset({"action", "module", "entry", "repo", "cids", "rest"})

_METAVARS = {"str": "TEXT", "bool": "", "int": "N", "float": "X", "seconds": "S", "list": "A,B", "map": "VALUE",
             "path": "PATH", "dict": "JSON", "any": "VALUE"}


@dataclass(frozen=True)
class Option:
    """One option of an action: ``--name=VALUE`` on the command line, ``"name": value`` in access().

    ``type`` is one of: str, bool (CK's yes/no/true/false/1/0, ``--flag`` alone is true), int, float,
    seconds (a positive number), list (comma-separated, or a list), map (``--name.KEY=VALUE``, repeatable),
    path, dict (an object, or its JSON text), any. ``default`` is the value when the option is absent;
    ``choices`` limits a str (matched regardless of case); ``minimum``/``maximum`` bound a number; ``aliases`` are other spellings
    (CK's ``-f``, dashed names); ``separators`` are the characters that split a list.
    """

    name: str
    type: str = "str"
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    aliases: tuple[str, ...] = ()
    separators: str = ","

    def __post_init__(self) -> None:
        if self.type not in _CONVERTERS:
            raise ValueError(f"option {self.name!r} has unknown type {self.type!r}")

    @property
    def flag(self) -> str:
        """How the option is written: ``--name``, ``--name=N``, ``--name.KEY=VALUE``."""
        if self.type == "bool":
            return f"--{self.name}"
        if self.type == "map":
            return f"--{self.name}.KEY=VALUE"
        metavar = "|".join(self.choices) if self.choices else _METAVARS[self.type]
        return f"--{self.name}={metavar}"

    def fresh_default(self) -> Any:
        """The default, copied when it is mutable (a list or a map gets a new one each time)."""
        if self.type == "bool" and self.default is None:
            return False
        if self.type == "list":
            return list(self.default or ())
        if self.type == "map":
            return dict(self.default or {})
        return self.default

    def convert(self, value: Any) -> Any:
        """``value`` as this option's type; UsageError naming ``--name`` when it does not fit."""
        if value is None:
            return self.fresh_default()
        return _CONVERTERS[self.type](self, value)

    def describe(self) -> dict[str, Any]:
        """Name, type, default and help as plain data (for ``help`` and the web API)."""
        out: dict[str, Any] = {"name": self.name, "type": self.type, "default": self.fresh_default(), "help": self.help}
        if self.choices:
            out["choices"] = list(self.choices)
        if self.aliases:
            out["aliases"] = list(self.aliases)
        return out


# -- converters: one per type ---------------------------------------------------------------------
def _wrong(option: Option, value: Any, wanted: str) -> UsageError:
    shown = value if not isinstance(value, str) else repr(value)
    return UsageError(f"--{option.name} takes {wanted}, not {shown!s:.80}",
                      hint=f"usage: {option.flag}" + (f" ({option.help})" if option.help else ""))


def _needs_value(option: Option) -> UsageError:
    return UsageError(f"--{option.name} needs a value: {option.flag}")


def _text(option: Option, value: Any) -> Any:
    if value is True:
        raise _needs_value(option)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _wrong(option, value, "a string")
    if option.choices:
        if value == "":
            return option.fresh_default()
        chosen = next((c for c in option.choices if c.lower() == value.lower()), None)
        if chosen is None:
            listing = ", ".join(option.choices[:-1]) + " or " + option.choices[-1] if len(option.choices) > 1 else option.choices[0]
            raise UsageError(f"--{option.name} must be {listing}, not {value!r}")
        return chosen
    return value


def _path(option: Option, value: Any) -> str | None:
    text = _text(option, value)
    return text if text else option.fresh_default()


def _boolean(option: Option, value: Any) -> bool:
    return as_bool(value, option.name)


def _number(option: Option, value: Any, *, integer: bool) -> Any:
    if value is True:
        raise _needs_value(option)
    if isinstance(value, str) and not value.strip():
        return option.fresh_default()
    wanted = "a whole number" if integer else "a finite number"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _wrong(option, value, wanted)
    try:
        number = float(value) if not integer else int(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):  # OverflowError: int(inf), which JSON's Infinity reaches
        raise _wrong(option, value, wanted) from None
    if (integer and isinstance(value, float) and value != number) or not math.isfinite(number):
        raise _wrong(option, value, wanted)
    _check_bounds(option, number, value)
    return number


def _check_bounds(option: Option, number: float, given: Any) -> None:
    if option.minimum is not None and number < option.minimum:
        raise UsageError(f"--{option.name} must be at least {option.minimum:g}, not {given!r}")
    if option.maximum is not None and number > option.maximum:
        raise UsageError(f"--{option.name} must be at most {option.maximum:g}, not {given!r}")


def _seconds(option: Option, value: Any) -> float | None:
    seconds = _number(option, value, integer=False)
    if seconds is not None and seconds <= 0:
        raise UsageError(f"--{option.name} takes a positive number of seconds, not {value!r}")
    return seconds


def _list(option: Option, value: Any) -> list[str]:
    if value is True:
        raise _needs_value(option)
    if isinstance(value, str):
        items: Iterable[Any] = re.split(f"[{re.escape(option.separators)}]", value)
    elif isinstance(value, (list, tuple)):
        items = value
        if not all(isinstance(i, str) or (isinstance(i, (int, float)) and not isinstance(i, bool)) for i in items):
            raise _wrong(option, value, "a list of strings")
    else:
        raise _wrong(option, value, "a comma-separated list")
    return [text for text in (str(i).strip() for i in items) if text]


def _map(option: Option, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise UsageError(f"--{option.name} takes keys: --{option.name}.KEY=VALUE, not {value!r:.80}")
    out: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, bool):
            out[str(key)] = FLAG_VALUE if item else ""
        elif isinstance(item, str) or (isinstance(item, (int, float)) and math.isfinite(item)):
            out[str(key)] = str(item)
        else:
            raise UsageError(f"--{option.name}.{key} takes a value, not {item!r:.80}",
                             hint=f"usage: --{option.name}.{key}=VALUE")
    return out


def _dict(option: Option, value: Any) -> dict:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise UsageError(f"--{option.name} takes a JSON object (or pass it in @input.json)") from None
    if not isinstance(value, dict):
        raise _wrong(option, value, "an object")
    return value


_CONVERTERS: dict[str, Callable[[Option, Any], Any]] = {
    "str": _text,
    "path": _path,
    "bool": _boolean,
    "int": lambda option, value: _number(option, value, integer=True),
    "float": lambda option, value: _number(option, value, integer=False),
    "seconds": _seconds,
    "list": _list,
    "map": _map,
    "dict": _dict,
    "any": lambda option, value: value,
}


# -- the options every action takes ---------------------------------------------------------------
GLOBAL_OPTIONS: tuple[Option, ...] = (
    Option("json", "bool", help="print the result as one JSON document"),
    Option("quiet", "bool", help="never prompt (also CKX_QUIET=1)"),
    Option("out", "str", help="CK's output mode: --out=json is --json"),
    Option("verbose", "bool", help="accepted for CK command lines"),
    Option("debug", "bool", help="accepted for CK command lines (CKX_DEBUG=1 shows tracebacks)"),
    Option("skip_print_timers", "bool", help="do not print per-run timings"),
    Option("skip_print_stats", "bool", help="do not print statistics"),
)


# -- parsing a request ----------------------------------------------------------------------------
def known_options(options: Sequence[Option]) -> dict[str, Option]:
    """Every accepted spelling -> its Option: the action's own first, then the global ones it does not redefine."""
    table: dict[str, Option] = {}
    for option in (*options, *GLOBAL_OPTIONS):
        for spelling in (option.name, *option.aliases):
            table.setdefault(spelling, option)
    return table


def parse(options: Sequence[Option], inp: Mapping[str, Any], *, where: str = "") -> dict[str, Any]:
    """``inp`` with every declared option typed and its default filled in; RESERVED keys pass unchanged.

    ``where`` names the action in messages (``benchmark program``). Raises UsageError for an unknown
    option (naming the nearest known one), a value of the wrong type, or the same option given twice.
    """
    table = known_options(options)
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in inp.items():
        if key in RESERVED:
            out[key] = _reserved(key, value)
            continue
        option = table.get(key)
        if option is None:
            raise unknown_option(key, table, where)
        if option.name in spelled:
            raise UsageError(f"--{key} and --{spelled[option.name]} are the same option; give it once")
        spelled[option.name] = key
        out[option.name] = option.convert(value)
    for option in table.values():
        if option.name not in out:
            out[option.name] = option.fresh_default()
    return out


def _reserved(key: str, value: Any) -> Any:
    if key in ("cids", "rest") and value is not None:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, int, float)) for v in value):
            raise UsageError(f"'{key}' must be a list of strings")
        return [str(v) for v in value]
    return value


def unknown_option(key: str, table: Mapping[str, Option], where: str) -> UsageError:
    """The error for an option no declaration knows, naming the nearest known spelling."""
    import difflib  # only on this error path: keeps start-up light

    close = difflib.get_close_matches(key, list(table), n=1, cutoff=0.6)
    label = f" for '{where}'" if where else ""
    suggestion = f"; did you mean --{close[0]}?" if close else ""
    topic = where.split()[0] if where else ""
    hint = f"'ckx help {topic}' lists its options" if topic else "'ckx help' lists the actions"
    return UsageError(f"unknown option --{key}{label}{suggestion}", hint=hint)


def describe(options: Sequence[Option]) -> list[dict[str, Any]]:
    """The declared options as plain data, in declaration order."""
    return [option.describe() for option in options]


def option_lines(options: Sequence[Option], indent: str = "  ") -> list[str]:
    """One line per option: how it is written, its type, its default and its help."""
    lines = []
    for option in options:
        default = option.fresh_default()
        shown = "" if default in (None, False, [], {}, "") else f" (default {default})"
        alias = f" (also {', '.join('-' * (1 if len(a) == 1 else 2) + a for a in option.aliases)})" if option.aliases else ""
        lines.append(f"{indent}{option.flag:<30} {option.type:<8} {option.help}{shown}{alias}".rstrip())
    return lines


__all__ = ["FLAG_VALUE", "GLOBAL_OPTIONS", "RESERVED", "Option", "describe", "known_options", "option_lines",
           "parse", "unknown_option"]
