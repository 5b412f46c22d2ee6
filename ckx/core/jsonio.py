"""Reading meta files (JSON or YAML) and writing JSON atomically, sorted and indented."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ckx.core.errors import MetaError
from ckx.core.limits import Limits, home_limits


def _read_bounded(path: Path, max_bytes: int | None) -> bytes:
    """The bytes of ``path``; MetaError naming it when it holds more than ``max_bytes``."""
    with open(path, "rb") as handle:
        if max_bytes is None:
            return handle.read()
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise MetaError(f"{path}: larger than the {max_bytes}-byte limit for meta files",
                        hint="if the file is trusted, raise 'limits.meta_max_bytes' in $CKX_HOME/settings.json (then 'ckx reindex')")
    return data


def read_json(path: Path, *, max_bytes: int | None = None) -> Any:
    """Parse a JSON file; a syntax error, non-UTF-8 text or runaway nesting becomes MetaError naming the file."""
    try:
        return json.loads(_read_bounded(path, max_bytes))
    except json.JSONDecodeError as exc:
        raise MetaError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise MetaError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except ValueError as exc:  # a number of more digits than int() converts (sys.get_int_max_str_digits)
        raise MetaError(f"{path}: a value ckx cannot read: {exc}") from None
    except RecursionError:
        raise MetaError(f"{path}: nested too deeply to parse") from None


def read_yaml(path: Path, *, max_bytes: int | None = None) -> Any:
    """Parse a YAML file with the safe loader and no aliases (an alias bomb expands exponentially)."""
    import yaml  # lazily: YAML metas are rare and yaml costs start-up time

    class _NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise MetaError(f"{path}: line {mark.line + 1}: YAML aliases are not allowed in meta files")
            return super().compose_node(parent, index)

    try:
        return yaml.load(_read_bounded(path, max_bytes), Loader=_NoAliasLoader)  # noqa: S506 - safe loader
    except yaml.YAMLError as exc:
        raise MetaError(f"{path}: invalid YAML: {exc}") from None
    except ValueError as exc:  # a number of more digits than int() converts, a date that does not exist
        raise MetaError(f"{path}: a value ckx cannot read: {exc}") from None
    except RecursionError:
        raise MetaError(f"{path}: nested too deeply to parse") from None


def read_meta_file(path: Path, *, limits: Limits | None = None, max_bytes: int | None = None,
                   max_depth: int | None = None) -> dict:
    """Read a meta file by its suffix; the top level must be a mapping, within the size and depth bounds.

    The bounds are ``max_bytes``/``max_depth`` when given, else those of ``limits`` (default: the
    home's, ``home_limits()``: settings.json over the defaults).
    """
    if max_bytes is None or max_depth is None:
        limits = limits or home_limits()
        max_bytes = limits.meta_max_bytes if max_bytes is None else max_bytes
        max_depth = limits.meta_max_depth if max_depth is None else max_depth
    reader = read_yaml if path.suffix in (".yaml", ".yml") else read_json
    data = reader(path, max_bytes=max_bytes)
    if not isinstance(data, dict):
        raise MetaError(f"{path}: the top level must be an object, not {type(data).__name__}")
    depth, is_json = _scan(data)
    if depth > max_depth:
        raise MetaError(f"{path}: nested {depth} levels deep, over the limit of {max_depth}",
                        hint="if the file is trusted, raise 'limits.meta_max_depth' in $CKX_HOME/settings.json (then 'ckx reindex')")
    if not is_json:
        _name_the_field(path, data)
    return data


_JSON_SCALARS = (str, int, float, bool, type(None))


def _is_text(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _scan(data: dict) -> tuple[int, bool]:
    """How deeply ``data`` nests (as ckx.core.limits.nesting_depth counts), and whether it is JSON's data
    model with text SQLite and UTF-8 can hold, in one pass without recursion.

    YAML can say more than JSON (dates, binary, sets, keys that are not strings) and JSON's ``\\ud800``
    escapes make strings that are not text; a meta holding either would break every consumer later.
    """
    deepest = 0
    is_json = True
    containers: list[tuple[object, int]] = [(data, 1)]
    while containers:
        node, depth = containers.pop()
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            if is_json and not all(isinstance(key, str) and _is_text(key) for key in node):
                is_json = False
            values = node.values()
        else:
            values = node  # type: ignore[assignment]
        for value in values:
            if isinstance(value, (dict, list)):
                containers.append((value, depth + 1))
            elif not is_json:
                continue
            elif isinstance(value, str):
                is_json = _is_text(value)
            elif not isinstance(value, _JSON_SCALARS):
                is_json = False
    return deepest, is_json


def _name_the_field(path: Path, data: dict) -> None:
    """Raise the MetaError for the first value of ``data`` that is not JSON text (the slow walk)."""
    stack: list[tuple[object, str]] = [(data, "")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, str):
                    raise MetaError(f"{path}: field '{where or '.'}': key {key!r} ({type(key).__name__}) "
                                    "is not a string", hint="quote the key")
                if not _is_text(key):
                    raise MetaError(f"{path}: field '{where or '.'}': a key holds a lone surrogate "
                                    "(an escape like \\ud800), which is not text")
                stack.append((value, f"{where}.{key}" if where else key))
        elif isinstance(node, list):
            stack.extend((value, f"{where}[{index}]") for index, value in enumerate(node))
        elif isinstance(node, str):
            if not _is_text(node):
                raise MetaError(f"{path}: field '{where}': a string holds a lone surrogate "
                                "(an escape like \\ud800), which is not text")
        elif not isinstance(node, _JSON_SCALARS):
            raise MetaError(f"{path}: field '{where}': a YAML {type(node).__name__} is not JSON data",
                            hint="write the value as a quoted string")


def dumps(data: Any) -> str:
    """The one JSON text format ckx writes: sorted keys, two-space indent, trailing newline."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and os.replace."""
    import tempfile  # lazily: only writes need it, and it costs start-up time on every read-only command

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, usual_file_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once at import, before any thread starts: os.umask() is process-wide and briefly changes it.
_UMASK = _read_umask()


def usual_file_mode() -> int:
    """The mode a plain new file gets (0666 minus the umask); mkstemp's files are 0600 until chmod-ed."""
    return 0o666 & ~_UMASK


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as sorted, indented JSON, atomically."""
    write_text_atomic(path, dumps(data))


def write_meta_file(path: Path, data: dict) -> None:
    """Write a meta file in the format its suffix names (JSON or YAML), atomically."""
    if path.suffix in (".yaml", ".yml"):
        import yaml  # lazily: YAML metas are rare and yaml costs start-up time

        write_text_atomic(path, yaml.safe_dump(data, sort_keys=True, allow_unicode=True))
    else:
        write_json_atomic(path, data)
