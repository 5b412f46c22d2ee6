"""Reading meta files (JSON or YAML) and writing JSON atomically, sorted and indented."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ckx.core.errors import MetaError


def read_json(path: Path) -> Any:
    """Parse a JSON file; a syntax error becomes MetaError naming the file, line and column."""
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read())
    except json.JSONDecodeError as exc:
        raise MetaError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise MetaError(f"{path}: not UTF-8 text ({exc.reason})") from None


def read_yaml(path: Path) -> Any:
    """Parse a YAML file (safe loader); errors name the file."""
    import yaml  # lazily: YAML metas are rare and yaml costs start-up time

    try:
        with open(path, "rb") as handle:
            return yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        raise MetaError(f"{path}: invalid YAML: {exc}") from None


def read_meta_file(path: Path) -> dict:
    """Read a meta file by its suffix; the top level must be a mapping."""
    data = read_yaml(path) if path.suffix in (".yaml", ".yml") else read_json(path)
    if not isinstance(data, dict):
        raise MetaError(f"{path}: the top level must be an object, not {type(data).__name__}")
    return data


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
        import yaml

        write_text_atomic(path, yaml.safe_dump(data, sort_keys=True, allow_unicode=True))
    else:
        write_json_atomic(path, data)
