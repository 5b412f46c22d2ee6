"""The validation list (val_map) and the images it names: QSL index = entry number in the list."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import FormatError, InputNotFound, UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListEntry:
    """One non-blank line of a val_map: image name, acceptable labels, physical line number (1-based)."""

    name: str
    labels: tuple[int, ...]
    line: int


@dataclass(frozen=True)
class Sample:
    """A listed image that exists on disk (absolute path), with the identity that keys its cached crop."""

    index: int
    name: str
    labels: tuple[int, ...]
    line: int
    path: Path
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Dataset:
    """The first ``count`` entries of a val_map under an image directory, in list order."""

    root: Path
    list_path: Path
    samples: tuple[Sample, ...]

    def __len__(self) -> int:
        return len(self.samples)


def parse_label_field(field: str) -> tuple[int, ...]:
    """Parse ``65`` or the label set ``281,282,285`` into a tuple of non-negative ints.

    Raises ValueError on anything else (empty items, signs, non-digits).
    """
    items = field.split(",")
    if any(not (item.isascii() and item.isdigit()) for item in items):
        raise ValueError(f"bad label {field!r}")
    return tuple(int(item) for item in items)


def unsafe_name_problem(name: str) -> str | None:
    """Why a listed image name could reach outside the dataset directory, or None when it cannot."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    if any(part == ".." for part in name.replace("\\", "/").split("/")):
        return "climbs out of the dataset directory with '..'"
    if any(ord(char) < 32 for char in name):
        return "holds a control character"
    return None


def read_val_map(list_path: str | os.PathLike, *, count: int | None = None) -> list[ListEntry]:
    """Read a val_map (``NAME LABEL`` or ``NAME L1,L2,...`` per line; blank lines ignored).

    ``count`` keeps the first ``count`` entries (the rest of the file is not read).
    Raises InputNotFound if the file is missing and FormatError naming the file and line number
    for a malformed line: a bad line is never skipped, as that would shift every later label.
    """
    path = Path(list_path)
    try:
        # utf-8-sig: a byte-order mark from a Windows editor would otherwise stick to the first name
        handle = path.open("r", encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputNotFound(f"dataset list not found: {path}") from None
    except OSError as exc:
        raise InputNotFound(f"cannot read dataset list {path}: {exc.strerror}") from None
    entries: list[ListEntry] = []
    with handle:
        try:
            for lineno, raw in enumerate(handle, start=1):
                if count is not None and len(entries) >= count:
                    break
                fields = raw.split()
                if not fields:
                    continue
                if len(fields) != 2:
                    raise FormatError(
                        f"{path}:{lineno}: expected 'NAME LABEL' (two fields), got {raw.strip()!r}"
                    )
                try:
                    labels = parse_label_field(fields[1])
                except ValueError:
                    raise FormatError(
                        f"{path}:{lineno}: label must be a non-negative integer or a comma-separated set "
                        f"of them, got {fields[1]!r}"
                    ) from None
                problem = unsafe_name_problem(fields[0])
                if problem:
                    raise FormatError(f"{path}:{lineno}: image name {fields[0]!r} {problem}",
                                      hint="names in a val_map are relative to the dataset directory")
                entries.append(ListEntry(fields[0], labels, lineno))
        except UnicodeDecodeError as exc:
            raise FormatError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    return entries


def load_dataset(
    root: str | os.PathLike, list_path: str | os.PathLike | None = None, *, count: int | None = None
) -> Dataset:
    """Read the list (default ``root/val_map.txt``) and check that every listed image exists.

    ``count`` keeps the first ``count`` entries; asking for more than the list holds keeps them all
    with a warning. Raises InputNotFound naming the image and its list line if an image is missing,
    FormatError for a malformed list, UsageError for an empty selection.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise InputNotFound(f"dataset directory not found: {root_path}")
    list_file = Path(list_path) if list_path is not None else root_path / "val_map.txt"
    if count is not None and count <= 0:
        raise UsageError(f"--count must be positive, got {count}")
    entries = read_val_map(list_file, count=count)
    if not entries:
        raise UsageError(f"dataset list {list_file} has no entries")
    if count is not None and len(entries) < count:
        log.warning("asked for %d images but %s lists only %d; using all of them", count, list_file, len(entries))
    samples = []
    absolute_root = root_path.resolve()  # once: sample paths are absolute, and they key the crop cache
    for index, entry in enumerate(entries):
        image = absolute_root / entry.name
        try:
            st = image.stat()
        except OSError:
            raise InputNotFound(
                f"image not found: {image} (listed at {list_file}:{entry.line})",
                hint="every listed image must exist: the sample index is the list line, so none may be skipped",
            ) from None
        samples.append(Sample(index, entry.name, entry.labels, entry.line, image, st.st_size, st.st_mtime_ns))
    return Dataset(root_path, list_file, tuple(samples))
