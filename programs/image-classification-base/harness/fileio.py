"""Atomic file writes: a temporary file in the target's directory, then os.replace."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, IO

FILE_MODE = 0o644


def write_atomic(path: str | os.PathLike, writer: Callable[[IO[bytes]], None]) -> Path:
    """Call ``writer`` with a binary file handle, then move the result onto ``path`` (mode 0644)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            writer(handle)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as sorted, indented JSON to ``path`` atomically."""
    text = json.dumps(data, sort_keys=True, indent=2, allow_nan=False, default=str) + "\n"
    return write_text_atomic(path, text)
