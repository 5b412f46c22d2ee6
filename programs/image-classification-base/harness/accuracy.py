"""Top-1 accuracy from LoadGen's mlperf_log_accuracy.json and a val_map, printed in the official line format."""
# Usage: ``python -m harness.accuracy --mlperf-accuracy-file F --val-map V [--dtype float32] [--output accuracy.txt]``
#
# Each log entry's ``data`` is the hex of the response bytes; its first element (``--dtype``) is the
# predicted class. Entries are de-duplicated by ``qsl_idx`` (the first one counts), and the QSL index
# is the entry number in the val_map (blank lines ignored). A val_map label may be a comma-separated
# set of acceptable labels. Prints exactly ``accuracy=76.456%, good=38228, total=50000``.
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .dataset import Dataset, read_val_map
from .errors import FormatError, HarnessError, InputNotFound
from .fileio import write_text_atomic

log = logging.getLogger(__name__)

DTYPES = {"float32": np.float32, "int32": np.int32, "int64": np.int64, "float64": np.float64}


@dataclass(frozen=True)
class AccuracyResult:
    """Top-1 over the unique samples of a log: ``good`` of ``total`` were right."""

    good: int
    total: int
    empty: int = 0

    @property
    def top1(self) -> float:
        """Percentage of correct samples."""
        return 100.0 * self.good / self.total if self.total else 0.0

    def line(self) -> str:
        """The official line: ``accuracy=76.456%, good=38228, total=50000``."""
        return f"accuracy={self.top1:.3f}%, good={self.good}, total={self.total}"


def read_accuracy_log(path: str | os.PathLike) -> list[dict]:
    """The entries of an mlperf_log_accuracy.json; raises InputNotFound / FormatError naming the file."""
    log_path = Path(path)
    try:
        text = log_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputNotFound(f"accuracy log not found: {log_path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"cannot read accuracy log {log_path}: {exc}") from None
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{log_path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(entries, list):
        raise FormatError(f"{log_path}: expected a JSON array of {{seq_id, qsl_idx, data}} objects")
    return entries


def decode_predictions(
    entries: Sequence[dict], *, dtype: str = "float32", source: str | os.PathLike = "accuracy log",
) -> tuple[dict[int, int | None], int]:
    """Map each unique qsl_idx to its predicted class (None for an empty response).

    Returns the mapping and the number of duplicate entries skipped. Raises FormatError naming
    ``source`` and the entry for a malformed entry.
    """
    kind = DTYPES[dtype]
    width = np.dtype(kind).itemsize
    predictions: dict[int, int | None] = {}
    duplicates = 0
    for number, entry in enumerate(entries):
        try:
            index = entry["qsl_idx"]
            data = entry["data"]
        except (TypeError, KeyError):
            raise FormatError(f"{source}: entry {number} lacks qsl_idx or data") from None
        if not isinstance(index, int) or isinstance(index, bool) or index < 0 or not isinstance(data, str):
            raise FormatError(f"{source}: entry {number} has a bad qsl_idx or data")
        if index in predictions:
            duplicates += 1
            continue
        try:
            raw = bytes.fromhex(data)
        except ValueError:
            raise FormatError(f"{source}: entry {number} (qsl_idx {index}) has non-hex data") from None
        if not raw:
            predictions[index] = None
            continue
        if len(raw) < width:
            raise FormatError(f"{source}: entry {number} (qsl_idx {index}) has {len(raw)} bytes, "
                              f"fewer than one {dtype}")
        value = np.frombuffer(raw[:width], dtype=kind)[0]
        if not np.isfinite(value):
            raise FormatError(f"{source}: entry {number} (qsl_idx {index}) holds {value}, not a class")
        predictions[index] = int(value)
    return predictions, duplicates


def score(
    predictions: dict[int, int | None], labels: Sequence[tuple[int, ...]], *,
    log_source: str | os.PathLike = "accuracy log", list_source: str | os.PathLike = "val_map",
) -> AccuracyResult:
    """Compare predictions with ``labels[qsl_idx]`` (a prediction is right if it is in the label set)."""
    if not predictions:
        raise FormatError(f"{log_source}: no entries, nothing to score")
    good = empty = 0
    for index, predicted in predictions.items():
        if index >= len(labels):
            raise FormatError(f"{log_source}: qsl_idx {index} is beyond the {len(labels)} entries of {list_source}")
        if predicted is None:
            empty += 1
        elif predicted in labels[index]:
            good += 1
    if empty:
        log.warning("%d samples had an empty response (counted as wrong)", empty)
    return AccuracyResult(good, len(predictions), empty)


def compute_accuracy(
    accuracy_log: str | os.PathLike, val_map: str | os.PathLike, *, dtype: str = "float32",
) -> AccuracyResult:
    """Read both files and score the log against the val_map."""
    predictions, duplicates = decode_predictions(read_accuracy_log(accuracy_log), dtype=dtype, source=accuracy_log)
    if duplicates:
        log.info("skipped %d duplicate entries", duplicates)
    labels = [entry.labels for entry in read_val_map(val_map)]
    return score(predictions, labels, log_source=accuracy_log, list_source=val_map)


def compute_accuracy_for(accuracy_log: str | os.PathLike, dataset: Dataset, *, dtype: str = "float32") -> AccuracyResult:
    """Score a log against the labels of an already loaded dataset (the harness's in-process check)."""
    predictions, _ = decode_predictions(read_accuracy_log(accuracy_log), dtype=dtype, source=accuracy_log)
    labels = [sample.labels for sample in dataset.samples]
    return score(predictions, labels, log_source=accuracy_log, list_source=dataset.list_path)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: prints the accuracy line; errors go to stderr with a non-zero status."""
    parser = argparse.ArgumentParser(prog="python -m harness.accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--mlperf-accuracy-file", required=True, help="LoadGen's mlperf_log_accuracy.json")
    parser.add_argument("--val-map", required=True, help="the val_map the run used (QSL index = entry number)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="type of a response (float32)")
    parser.add_argument("--output", help="also write the line to this file")
    parser.add_argument("--verbose", action="store_true", help="log what was skipped")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s",
                        stream=sys.stderr)
    try:
        result = compute_accuracy(args.mlperf_accuracy_file, args.val_map, dtype=args.dtype)
        if args.output:
            write_text_atomic(args.output, result.line() + "\n")
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"error: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 1
    print(result.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
