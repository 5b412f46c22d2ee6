"""Plain text layouts shared by the library's human-readable results."""
from __future__ import annotations

from typing import Any


def table(columns: list[str], rows: list[list[Any]]) -> str:
    """A plain aligned text table."""
    cells = [[str(c) for c in columns]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(value.ljust(widths[i]) for i, value in enumerate(row)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
