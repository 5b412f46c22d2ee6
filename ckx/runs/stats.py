"""Statistics over a point's repetitions: flattened numeric characteristics, min/max/mean/median/stdev, tables."""
from __future__ import annotations

import math
import statistics
from typing import Any, Iterable, Mapping, Sequence

# Characteristics that describe the inputs of a run rather than its outcome: left out of statistics.
SETTINGS_PREFIXES = ("schema_version", "loadgen.", "rules.", "requested_settings.")
DURATION_KEY = "run.duration_s"
METRIC_KEY = "metric.value"


# -- statistics ----------------------------------------------------------------------------------
def compute_statistics(values: Sequence[float]) -> dict[str, Any]:
    """min, max, mean, median, sample stdev (0 for one value), range % of the mean, n and the values.

    ``range_pct`` is 100 * (max - min) / |mean| (None when the mean is 0). Raises ValueError on no values.
    """
    numbers = [float(v) for v in values]
    if not numbers:
        raise ValueError("no values")
    mean = statistics.fmean(numbers)
    low, high = min(numbers), max(numbers)
    return {
        "n": len(numbers),
        "min": low,
        "max": high,
        "mean": mean,
        "median": statistics.median(numbers),
        "stdev": statistics.stdev(numbers) if len(numbers) > 1 else 0.0,
        "range_pct": 100.0 * (high - low) / abs(mean) if mean else None,
        "values": numbers,
    }


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Scalar leaves of nested dicts as ``{"a.b.c": value}``; lists become comma-joined text."""
    out: dict[str, Any] = {}
    if isinstance(data, Mapping):
        for key in sorted(data, key=str):
            out.update(flatten(data[key], f"{prefix}{key}."))
    elif isinstance(data, (list, tuple)):
        if all(not isinstance(item, (dict, list, tuple)) for item in data):
            out[prefix[:-1]] = ",".join("" if item is None else str(item) for item in data)
    elif prefix:
        out[prefix[:-1]] = data
    return out


def numeric_characteristics(characteristics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers among a repetition's flattened characteristics, without run settings."""
    out: dict[str, float] = {}
    for key, value in flatten(characteristics).items():
        if key.startswith(SETTINGS_PREFIXES) or key in SETTINGS_PREFIXES:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


def point_statistics(repetitions: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Statistics per flattened numeric key over the repetitions that have it (plus the run duration)."""
    columns: dict[str, list[float]] = {}
    for rep in repetitions:
        values = numeric_characteristics(rep.get("characteristics") or {})
        duration = rep.get("duration_s")
        if isinstance(duration, (int, float)) and not isinstance(duration, bool):
            values[DURATION_KEY] = float(duration)
        for key, value in values.items():
            columns.setdefault(key, []).append(value)
    return {key: compute_statistics(values) for key, values in sorted(columns.items())}


# -- formatting ----------------------------------------------------------------------------------
def fmt(value: Any) -> str:
    """A number for humans: 1234.5, 12.346, 0.001235; other values as text."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.3f}"
    return f"{value:.4g}"


HEADLINE_KEYS = (METRIC_KEY, "samples_per_second", "completed_qps", "latency_ms.p50", "latency_ms.p90",
                 "latency_ms.p99", "accuracy.top1", DURATION_KEY)


def stats_table(stats: Mapping[str, Mapping[str, Any]], keys: Sequence[str] | None = None) -> dict:
    """A table (columns/rows) of statistics for ``keys`` (default: the headline keys present)."""
    keys = [k for k in (keys or HEADLINE_KEYS) if k in stats]
    rows = [[k, stats[k]["n"], fmt(stats[k]["min"]), fmt(stats[k]["max"]), fmt(stats[k]["mean"]),
             fmt(stats[k]["median"]), fmt(stats[k]["stdev"]), fmt(stats[k]["range_pct"])] for k in keys]
    return {"columns": ["characteristic", "n", "min", "max", "mean", "median", "stdev", "range %"], "rows": rows}
