"""The MLPerf rules a run follows: v6.1 (LoadGen 6's built-in mlperf.conf) or v1.0 (applied on top of it)."""
# LoadGen 6.0.17 compiles in the v6.1 mlperf.conf; its detail log names the conf by sha1
# (``loadgen_file_sha1["/mlperf.conf"]``). The v1.0 round's query counts and latency bounds are set
# in Python after the conf files, so a user.conf cannot contradict them; what LoadGen 6 cannot do
# the v1.0 way (its seeds, MultiStream's fixed 50 ms query interval, SingleStream's percentile
# without early stopping) is stated as a reason the run is not a v1.0 submission.
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .errors import UsageError

RULES_VERSIONS = ("v6.1", "v1.0")
DEFAULT_RULES = "v6.1"
BUILTIN_CONF = "/mlperf.conf"
NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class RoundValues:
    """What one round fixes for a scenario, beyond LoadGen's built-in conf (None: the built-in value)."""

    min_query_count: int | None = None
    latency_bound_ms: float | None = None
    latency_percentile: float | None = None


# resnet50, MLPerf Inference v1.0 (the round the ck workflow was written for)
V1_0_SEEDS = {"qsl_rng_seed": 7322528924094909334, "sample_index_rng_seed": 1570999273408051088,
              "schedule_rng_seed": 3507442325620259414}
V1_0 = {
    "SingleStream": RoundValues(min_query_count=1024, latency_percentile=0.9),
    "MultiStream": RoundValues(min_query_count=270_336, latency_bound_ms=50.0, latency_percentile=0.99),
    "Server": RoundValues(min_query_count=270_336, latency_bound_ms=15.0, latency_percentile=0.99),
    "Offline": RoundValues(min_query_count=24_576),
}
V1_0_NOT_APPLIED = {
    "SingleStream": ["LoadGen 6 applies early stopping to SingleStream; v1.0 reported the plain p90 of 1,024 queries"],
    "MultiStream": ["LoadGen 6 issues MultiStream queries back to back; v1.0 issued one every 50 ms and counted "
                    "late ones"],
    "Server": [],
    "Offline": [],
}


def check_rules(version: str) -> str:
    """``version`` if ckx knows it; UsageError naming the known ones otherwise."""
    if version not in RULES_VERSIONS:
        raise UsageError(f"--rules: unknown rules {version!r}; known: {', '.join(RULES_VERSIONS)}")
    return version


def apply_round(settings: Any, version: str, scenario: str, *, accuracy: bool) -> list[str]:
    """Set the round's values on LoadGen ``settings`` (after the conf files); returns what was set, in words.

    v6.1 is LoadGen's built-in conf: nothing to set. Under v1.0 the query counts, the Server
    latency bound and the MultiStream expected latency (its 50 ms bound) replace any user.conf value.
    """
    if version == DEFAULT_RULES or accuracy:
        return []
    values = V1_0[scenario]
    applied: list[str] = []
    if values.min_query_count is not None:
        settings.min_query_count = values.min_query_count
        applied.append(f"min_query_count {values.min_query_count}")
    if scenario == "Server" and values.latency_bound_ms is not None:
        settings.server_target_latency_ns = int(values.latency_bound_ms * NS_PER_MS)
        applied.append(f"server target latency {values.latency_bound_ms:g} ms")
    if scenario == "MultiStream" and values.latency_bound_ms is not None:
        settings.multi_stream_expected_latency_ns = int(values.latency_bound_ms * NS_PER_MS)
        applied.append(f"MultiStream latency bound {values.latency_bound_ms:g} ms (as the expected latency)")
    return applied


def round_violations(version: str, scenario: str, values: Mapping[str, Any], latency_ms: Mapping[str, float]) -> list[str]:
    """Why a performance run on LoadGen 6 is not a submission under ``version`` beyond the v6.1 checks."""
    if version == DEFAULT_RULES:
        return []
    reasons = [f"not a v1.0 submission: {text}" for text in V1_0_NOT_APPLIED[scenario]]
    for key, official in V1_0_SEEDS.items():
        used = values.get(f"effective_{key}")
        if used is not None and used != official:
            reasons.append(f"not a v1.0 submission: LoadGen 6 ignores seed overrides, {key} is {used}, "
                           f"not v1.0's {official}")
    bound = V1_0[scenario].latency_bound_ms
    pct = V1_0[scenario].latency_percentile
    if bound is not None and pct is not None:
        name = f"p{pct * 100:g}"
        measured = latency_ms.get(name)
        if measured is not None and measured > bound:
            reasons.append(f"{name} latency {measured:.3f} ms is above v1.0's {bound:g} ms bound")
    return reasons


def rules_record(version: str, values: Mapping[str, Any], applied: list[str]) -> dict[str, Any]:
    """The ``mlperf_rules`` section: version, LoadGen version, sha1 of the conf in effect, what was applied."""
    loadgen = str(values.get("loadgen_version") or "unknown").split(" @ ")[0]
    files = values.get("loadgen_file_sha1")
    sha1 = files.get(BUILTIN_CONF) if isinstance(files, dict) else None
    record: dict[str, Any] = {"version": version, "loadgen_version": loadgen, "conf": "LoadGen built-in mlperf.conf",
                              "conf_sha1": sha1}
    if version != DEFAULT_RULES:
        record["conf"] += f", then the {version} values set by the harness"
        record["applied"] = list(applied)
    return record


def summary_text(record: Mapping[str, Any]) -> str:
    """``rules v6.1 (LoadGen 6.0.17, mlperf.conf 68cdba86)`` for the summary line."""
    sha1 = record.get("conf_sha1") or "unknown"
    return f"rules {record.get('version')} (LoadGen {record.get('loadgen_version')}, mlperf.conf {sha1[:8]})"
