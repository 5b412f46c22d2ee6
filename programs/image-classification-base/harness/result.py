"""Parse LoadGen's logs (detail ``:::MLLOG`` lines first, the summary as fallback) into result.json."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import FormatError, InputNotFound
from .rules import DEFAULT_RULES, round_violations, rules_record
from .settings import Rules

SCHEMA_VERSION = 1
MLLOG_PREFIX = ":::MLLOG "
PERCENTILES = (("p50", "50.00"), ("p90", "90.00"), ("p95", "95.00"), ("p97", "97.00"), ("p99", "99.00"),
               ("p99.9", "99.90"))
NS_PER_MS = 1e6


@dataclass(frozen=True)
class DetailLog:
    """The last value of each key in mlperf_log_detail.txt, and the error / warning messages."""

    values: dict[str, Any]
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())


def read_detail_log(path: str | os.PathLike) -> DetailLog:
    """Parse ``:::MLLOG {json}`` lines; raises InputNotFound if the file is missing."""
    detail = Path(path)
    try:
        lines = detail.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        raise InputNotFound(f"LoadGen detail log not found: {detail}") from None
    values: dict[str, Any] = {}
    errors: list[str] = []
    warnings: list[str] = []
    for line in lines:
        if not line.startswith(MLLOG_PREFIX):
            continue
        try:
            record = json.loads(line[len(MLLOG_PREFIX):])
        except json.JSONDecodeError:
            continue  # a line cut short by a crash: keep what was readable
        key = record.get("key")
        if not isinstance(key, str):
            continue
        values[key] = record.get("value")
        meta = record.get("metadata") or {}
        if meta.get("is_error"):
            errors.append(f"{key}: {record.get('value')}")
        elif meta.get("is_warning"):
            warnings.append(f"{key}: {record.get('value')}")
    return DetailLog(values, tuple(errors), tuple(warnings))


def read_summary(path: str | os.PathLike) -> dict[str, str]:
    """``key : value`` pairs of mlperf_log_summary.txt (empty if the file is missing)."""
    summary = Path(path)
    if not summary.is_file():
        return {}
    pairs: dict[str, str] = {}
    for line in summary.read_text(encoding="utf-8", errors="replace").splitlines():
        match = re.match(r"^\s*([^:]+?)\s*:\s*(.+?)\s*$", line)
        if match and not line.lstrip().startswith("*"):
            pairs.setdefault(match.group(1), match.group(2))
    return pairs


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _ms(value: Any) -> float | None:
    number = _number(value)
    return None if number is None else number / NS_PER_MS


def performance_figures(scenario: str, detail: DetailLog, summary: dict[str, str]) -> dict[str, Any]:
    """Metric, latency percentiles (ms), throughput and early-stopping figures of a performance run."""
    v = detail.values
    out: dict[str, Any] = {}
    latency = {name: _ms(v.get(f"result_{pct}_percentile_latency_ns")) for name, pct in PERCENTILES}
    latency.update(min=_ms(v.get("result_min_latency_ns")), max=_ms(v.get("result_max_latency_ns")),
                   mean=_ms(v.get("result_mean_latency_ns")))
    if latency["p90"] is None:  # fallback: the summary's "90.00 percentile latency (ns)"
        for name, pct in PERCENTILES:
            latency[name] = _ms(summary.get(f"{pct} percentile latency (ns)"))
    out["latency_ms"] = {k: val for k, val in latency.items() if val is not None}
    out["query_count"] = v.get("result_query_count")
    if scenario == "Offline":
        sps = _number(v.get("result_samples_per_second", summary.get("Samples per second")))
        out["samples_per_second"] = sps
        out["metric"] = {"name": "samples_per_second", "value": sps, "unit": "samples/s"}
    elif scenario == "Server":
        completed = _number(v.get("result_completed_samples_per_sec", summary.get("Completed samples per second")))
        scheduled = _number(v.get("result_scheduled_samples_per_sec", summary.get("Scheduled samples per second")))
        out["completed_qps"] = completed
        out["scheduled_qps"] = scheduled
        value = completed if completed is not None else scheduled
        out["metric"] = {"name": "qps", "value": value, "unit": "queries/s"}
        out["early_stopping"] = {"met": v.get("early_stopping_met"), "result": v.get("early_stopping_result")}
    elif scenario == "SingleStream":
        estimate = _ms(v.get("early_stopping_latency_ss")) or None  # 0 when too few queries for an estimate
        out["metric"] = _latency_metric("p90_latency_ms", estimate, latency["p90"], "early_stopping_latency_ss")
        out["early_stopping"] = {"met": v.get("early_stopping_met"), "result": v.get("early_stopping_result"),
                                 "p90_latency_ms": estimate}
        out["qps_with_loadgen_overhead"] = _number(v.get("result_qps_with_loadgen_overhead"))
        out["qps_without_loadgen_overhead"] = _number(v.get("result_qps_without_loadgen_overhead"))
    elif scenario == "MultiStream":
        estimate = _ms(v.get("early_stopping_latency_ms")) or None
        out["metric"] = _latency_metric("p99_latency_ms", estimate, latency["p99"], "early_stopping_latency_ms")
        out["early_stopping"] = {"met": v.get("early_stopping_met"), "result": v.get("early_stopping_result"),
                                 "p99_latency_ms": estimate}
    return out


def _latency_metric(name: str, estimate: float | None, raw: float | None, key: str) -> dict[str, Any]:
    """The official latency metric: LoadGen's early-stopping estimate, or the raw percentile without one."""
    if estimate is not None:
        return {"name": name, "value": estimate, "unit": "ms", "official": True, "source": key, "raw": raw}
    return {"name": name, "value": raw, "unit": "ms", "official": False, "raw": raw,
            "source": f"raw percentile (LoadGen gave no {key}: too few queries)"}


def v1_0_metric(scenario: str, figures: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The v1.0 headline metric: raw p90 (SingleStream), samples per query (MultiStream), else as v6.1."""
    latency = figures.get("latency_ms") or {}
    if scenario == "SingleStream":
        return {"name": "p90_latency_ms", "value": latency.get("p90"), "unit": "ms", "official": True,
                "source": "raw p90 (v1.0)"}
    if scenario == "MultiStream":
        return {"name": "samples_per_query", "value": values.get("effective_samples_per_query"), "unit": "samples",
                "official": True, "source": "samples per query under the 50 ms bound (v1.0)"}
    if scenario == "Server":
        return {"name": "qps", "value": figures.get("scheduled_qps"), "unit": "queries/s", "official": True,
                "source": "scheduled samples per second (v1.0)"}
    return dict(figures["metric"])


def loadgen_verdict(detail: DetailLog, summary: dict[str, str]) -> tuple[bool, list[str]]:
    """LoadGen's VALID/INVALID and, when invalid, its reasons in words."""
    v = detail.values
    validity = v.get("result_validity", summary.get("Result is"))
    valid = validity == "VALID"
    reasons: list[str] = []
    if not valid:
        reasons.append(f"LoadGen: result {validity or 'missing'}")
        if v.get("result_min_duration_met") is False:
            reasons.append("LoadGen: min duration not met")
        if v.get("result_min_queries_met") is False:
            reasons.append("LoadGen: min query count not met")
        if v.get("result_perf_constraints_met") is False:
            reasons.append("LoadGen: latency constraint not met")
        if v.get("early_stopping_met") is False:
            reasons.append("LoadGen: early stopping criterion not met")
        hint = v.get("result_invalid_reason")
        if hint:
            reasons.append(f"LoadGen: {str(hint).strip()}")
    return valid, reasons


def rule_violations(scenario: str, detail: DetailLog, rules: Rules) -> list[str]:
    """Where the effective settings fall short of the built-in rules (short test runs always do)."""
    v = detail.values
    reasons: list[str] = []

    def below(key: str, floor: int, what: str) -> None:
        value = v.get(key)
        if isinstance(value, (int, float)) and value < floor:
            reasons.append(f"{what} {int(value):,} is below the rules' {floor:,}")

    below("effective_min_duration_ms", rules.min_duration_ms, "min_duration (ms)")
    below("effective_performance_sample_count", rules.performance_sample_count, "performance sample count")
    if scenario == "Offline":
        below("generated_samples_per_query", rules.min_query_count, "offline samples in the query")
    else:
        below("result_query_count", rules.min_query_count, "queries run")
    if scenario == "MultiStream":
        spq = v.get("effective_samples_per_query")
        if isinstance(spq, int) and spq != rules.multi_stream_samples_per_query:
            reasons.append(f"samples per query {spq} differs from the rules' {rules.multi_stream_samples_per_query}")
    if scenario == "Server":
        target = v.get("effective_target_latency_ns")
        if isinstance(target, (int, float)) and target > rules.server_target_latency_ns:
            reasons.append(f"target latency {target / NS_PER_MS:g} ms is above the rules' "
                           f"{rules.server_target_latency_ns / NS_PER_MS:g} ms")
    for key, official in (("effective_qsl_rng_seed", rules.qsl_rng_seed),
                          ("effective_sample_index_rng_seed", rules.sample_index_rng_seed),
                          ("effective_schedule_rng_seed", rules.schedule_rng_seed)):
        if key in v and v[key] != official:
            reasons.append(f"{key[len('effective_'):]} {v[key]} is not the official {official}")
    max_queries = v.get("effective_max_query_count")
    if isinstance(max_queries, int) and max_queries and scenario != "Offline":
        reasons.append(f"max_query_count {max_queries:,} caps the run")
    if detail.errors:
        reasons.append(f"LoadGen logged {len(detail.errors)} error(s): {detail.errors[0]}")
    return reasons


def effective_settings(detail: DetailLog) -> dict[str, Any]:
    """LoadGen's effective_* settings (prefix removed)."""
    return {k[len("effective_"):]: val for k, val in sorted(detail.values.items()) if k.startswith("effective_")}


def build_result(
    *,
    scenario: str,
    accuracy_mode: bool,
    log_dir: str | os.PathLike,
    rules: Rules,
    accuracy: dict[str, Any] | None = None,
    accuracy_meaningless: bool = False,
    extra: dict[str, Any] | None = None,
    rules_version: str = DEFAULT_RULES,
    rules_applied: list[str] | None = None,
    audit: bool = False,
) -> dict[str, Any]:
    """Assemble result.json from the logs in ``log_dir`` and what the harness knows.

    ``valid`` is LoadGen's verdict (in accuracy mode: every sample scored, no LoadGen error);
    ``valid_for_submission`` also requires the rules (duration, query counts, seeds), a
    performance run and a meaningful model; ``invalid_reasons`` lists every shortfall.
    ``mlperf_rules`` names the rules followed (``rules_version``; ``rules_applied`` the values the
    harness set for them); under v1.0 what LoadGen 6 cannot do that way is a reason too. ``audit``
    marks a compliance run (an audit.config was in effect): never a submission's performance run.
    Raises InputNotFound if LoadGen wrote no detail log, FormatError if it holds nothing.
    """
    directory = Path(log_dir)
    detail = read_detail_log(directory / "mlperf_log_detail.txt")
    if not detail.values:
        raise FormatError(f"{directory / 'mlperf_log_detail.txt'} holds no :::MLLOG records")
    summary = read_summary(directory / "mlperf_log_summary.txt")
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "scenario": scenario,
        "mode": "accuracy" if accuracy_mode else "performance",
        "loadgen": effective_settings(detail),
        "rules": rules.to_dict(),
        "mlperf_rules": rules_record(rules_version, detail.values, list(rules_applied or ())),
        "loadgen_errors": list(detail.errors),
        "audit": {"test": None, "audit_config": True} if audit else None,
    }
    reasons: list[str] = []
    if accuracy_mode:
        complete = accuracy is not None and accuracy.get("total") == accuracy.get("expected")
        valid = bool(accuracy is not None and complete and not detail.errors)
        if not valid:
            reasons.append("accuracy run incomplete or LoadGen reported errors")
        reasons.append("accuracy mode: an accuracy run measures no performance")
        result["accuracy"] = accuracy
        if accuracy is not None:
            result["metric"] = {"name": "top1", "value": accuracy["top1"], "unit": "%"}
    else:
        result.update(performance_figures(scenario, detail, summary))
        valid, loadgen_reasons = loadgen_verdict(detail, summary)
        reasons.extend(loadgen_reasons)
        reasons.extend(rule_violations(scenario, detail, rules))
        if rules_version != DEFAULT_RULES:
            result["metric_v6_1"] = result["metric"]
            result["metric"] = v1_0_metric(scenario, result, detail.values)
            reasons.extend(round_violations(rules_version, scenario, detail.values, result.get("latency_ms") or {}))
    if audit:
        reasons.append("audit run: an audit.config was in effect (a compliance test, not a submission run)")
    if accuracy_meaningless:
        reasons.append("the model has random weights: its accuracy is meaningless")
    result["valid"] = valid
    result["invalid_reasons"] = reasons
    result["valid_for_submission"] = not reasons
    if extra:
        result.update(extra)
    return result
