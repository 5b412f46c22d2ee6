"""LoadGen TestSettings from the built-in mlperf.conf, then user.conf, then command-line overrides."""
# LoadGen 6 compiles mlperf.conf in: ``FromConfig("", model, scenario, 0)`` loads only it, and
# ``FromConfig(user_conf, model, scenario, 2)`` loads only a user file on top (verified with 6.0.17;
# conf_type 1 would load both, but the built-in part only once per process). FromConfig never raises:
# it returns a negative number for a missing or unparsable file. Values set afterwards in Python win.
# The values right after the built-in conf are kept as :class:`Rules`: what a submission must meet.
from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import mlperf_loadgen as lg

from .errors import FormatError, InputNotFound, UsageError
from .rules import DEFAULT_RULES, V1_0, apply_round

log = logging.getLogger(__name__)

SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
NS_PER_S = 1_000_000_000
MAX_DURATION_FACTOR = 1.25
MAX_DURATION_SLACK_MS = 2000
OFFLINE_MARGIN = 1.1  # LoadGen issues 10% more Offline samples than expected QPS x min duration


@dataclass(frozen=True)
class Overrides:
    """Command-line overrides, applied after the conf files (None: leave the conf's value)."""

    count: int | None = None
    time_s: float | None = None
    qps: float | None = None
    max_latency_s: float | None = None
    samples_per_query: int | None = None


@dataclass(frozen=True)
class Rules:
    """The built-in mlperf.conf values for a model and scenario, before any user change."""

    min_duration_ms: int
    min_query_count: int
    performance_sample_count: int
    server_target_latency_ns: int
    server_target_latency_percentile: float
    multi_stream_samples_per_query: int
    qsl_rng_seed: int
    sample_index_rng_seed: int
    schedule_rng_seed: int

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for result.json."""
        return asdict(self)


def _rules_of(settings: lg.TestSettings) -> Rules:
    return Rules(
        min_duration_ms=int(settings.min_duration_ms),
        min_query_count=int(settings.min_query_count),
        performance_sample_count=int(settings.performance_sample_count_override),
        server_target_latency_ns=int(settings.server_target_latency_ns),
        server_target_latency_percentile=float(settings.server_target_latency_percentile),
        multi_stream_samples_per_query=int(settings.multi_stream_samples_per_query),
        qsl_rng_seed=int(settings.qsl_rng_seed),
        sample_index_rng_seed=int(settings.sample_index_rng_seed),
        schedule_rng_seed=int(settings.schedule_rng_seed),
    )


def round_rules(builtin: Rules, version: str, scenario: str) -> Rules:
    """The rules to judge a run by: the built-in values, with the older round's counts and bounds."""
    if version == DEFAULT_RULES:
        return builtin
    values = V1_0[scenario]
    changed = replace(builtin, min_query_count=values.min_query_count or builtin.min_query_count)
    if scenario == "Server" and values.latency_bound_ms is not None:
        changed = replace(changed, server_target_latency_ns=int(values.latency_bound_ms * 1_000_000))
    return changed


def build_test_settings(
    model_name: str,
    scenario: str,
    *,
    accuracy: bool,
    user_conf: str | os.PathLike | Sequence[str | os.PathLike] | None,
    overrides: Overrides,
    total_samples: int,
    rules_version: str = DEFAULT_RULES,
) -> tuple[lg.TestSettings, Rules, list[str]]:
    """TestSettings for one run, and the rules (built-in values) to judge it against.

    ``--count N`` sets min and max query count (for Offline: the samples in its one query; for Server
    with ``--time``, the min query count alone, see below);
    ``--time S`` sets the min duration and a max duration a little above it
    (:func:`max_duration_for`; none when ``--count`` bounds the run too); ``--qps`` the Server target and Offline expected QPS;
    ``--max-latency S`` the Server target latency (and MultiStream expected latency);
    ``--samples-per-query`` the MultiStream query size. The performance sample count is capped at
    the dataset size. Several user confs are read in order (later values win). ``rules_version`` other than v6.1 sets that round's values after the conf
    files (:func:`rules.apply_round`); the third value returned lists them. Under ``--time`` an
    Offline run's one query holds as many samples as the expected QPS gives in that time, not the
    rules' minimum. Raises InputNotFound / FormatError for a missing / unparsable user.conf.
    """
    if scenario not in SCENARIOS:
        raise UsageError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    settings = lg.TestSettings()
    if settings.FromConfig("", model_name, scenario, 0) < 0:
        raise FormatError(f"LoadGen could not read its built-in mlperf.conf for {model_name}/{scenario}")
    rules = round_rules(_rules_of(settings), rules_version, scenario)
    confs = [user_conf] if isinstance(user_conf, (str, os.PathLike)) else list(user_conf or ())
    for item in confs:
        conf = Path(item)
        if not conf.is_file():
            raise InputNotFound(f"user.conf not found: {conf}")
        if settings.FromConfig(os.fspath(conf), model_name, scenario, 2) < 0:
            raise FormatError(f"LoadGen could not parse {conf} (expected lines like '*.Offline.target_qps = 26')")
    settings.scenario = getattr(lg.TestScenario, scenario)
    settings.mode = lg.TestMode.AccuracyOnly if accuracy else lg.TestMode.PerformanceOnly
    applied = apply_round(settings, rules_version, scenario, accuracy=accuracy)
    _apply(settings, overrides)
    if scenario == "Offline" and overrides.time_s is not None and overrides.count is None:
        settings.min_query_count = 1  # the sample count then follows from expected QPS x duration
    if scenario == "Server" and overrides.time_s is not None and overrides.count is not None:
        # a Server run that reaches max_query_count logs "Ending early: Max query count reached" as an
        # error, and the official compliance verification cannot read a log with errors; the count and
        # the (short) min duration end the run instead, after max(count, QPS x time) queries
        settings.max_query_count = 0
    if settings.performance_sample_count_override == 0 or settings.performance_sample_count_override > total_samples:
        settings.performance_sample_count_override = total_samples
    return settings, rules, applied


def _apply(settings: lg.TestSettings, o: Overrides) -> None:
    if o.count is not None:
        if o.count <= 0:
            raise UsageError(f"--count must be positive, got {o.count}")
        settings.min_query_count = o.count
        settings.max_query_count = o.count
    if o.time_s is not None:
        if o.time_s <= 0:
            raise UsageError(f"--time must be positive, got {o.time_s}")
        settings.min_duration_ms = int(round(o.time_s * 1000))
        # with --count too, the query count bounds the run: a duration cap would cut it short of that
        # count on a slow machine and make the run INVALID
        settings.max_duration_ms = 0 if o.count is not None else max_duration_for(settings.min_duration_ms)
    if o.qps is not None:
        if o.qps <= 0:
            raise UsageError(f"--qps must be positive, got {o.qps}")
        settings.server_target_qps = float(o.qps)
        settings.offline_expected_qps = float(o.qps)
    if o.max_latency_s is not None:
        if o.max_latency_s <= 0:
            raise UsageError(f"--max-latency must be positive, got {o.max_latency_s}")
        settings.server_target_latency_ns = int(o.max_latency_s * NS_PER_S)
        settings.multi_stream_expected_latency_ns = int(o.max_latency_s * NS_PER_S)
    if o.samples_per_query is not None:
        if o.samples_per_query <= 0:
            raise UsageError(f"--samples-per-query must be positive, got {o.samples_per_query}")
        settings.multi_stream_samples_per_query = o.samples_per_query


def max_duration_for(min_duration_ms: int) -> int:
    """The cap that ``--time`` puts on a run: a little above its minimum duration.

    The reference sets max = min, but then LoadGen often stops at max_duration just before the
    last generated query and reports the minimum duration as not met (seen with 6.0.17 in Server:
    INVALID at random). A margin keeps short runs bounded and their verdict stable.
    """
    return int(min_duration_ms * MAX_DURATION_FACTOR) + MAX_DURATION_SLACK_MS


def offline_sample_count(settings: lg.TestSettings) -> int:
    """The samples LoadGen puts in an Offline run's one query: the min count, or expected QPS x duration."""
    from_duration = math.ceil(settings.min_duration_ms / 1000 * settings.offline_expected_qps * OFFLINE_MARGIN)
    return max(int(settings.min_query_count), from_duration)


def expected_duration_s(settings: lg.TestSettings, scenario: str, *, accuracy: bool, total_samples: int) -> float:
    """How long LoadGen will run, from the settings' expectations (Offline is not capped by max duration)."""
    if accuracy:
        return total_samples / max(float(settings.offline_expected_qps), 1e-9)
    if scenario == "Offline":
        return offline_sample_count(settings) / max(float(settings.offline_expected_qps), 1e-9)
    per_query_s = {
        "SingleStream": settings.single_stream_expected_latency_ns / NS_PER_S,
        "MultiStream": settings.multi_stream_expected_latency_ns / NS_PER_S,
        "Server": 1 / max(float(settings.server_target_qps), 1e-9),
    }[scenario]
    seconds = max(settings.min_duration_ms / 1000, settings.min_query_count * per_query_s)
    if settings.max_duration_ms:
        seconds = min(seconds, settings.max_duration_ms / 1000)
    if settings.max_query_count:
        seconds = min(seconds, max(settings.min_duration_ms / 1000, settings.max_query_count * per_query_s))
    return seconds


def describe_settings(settings: lg.TestSettings) -> dict[str, Any]:
    """The settings handed to LoadGen, as plain values (LoadGen's effective ones are in its log)."""
    return {
        "scenario": str(settings.scenario).split(".")[-1],
        "mode": str(settings.mode).split(".")[-1],
        "min_duration_ms": int(settings.min_duration_ms),
        "max_duration_ms": int(settings.max_duration_ms),
        "min_query_count": int(settings.min_query_count),
        "max_query_count": int(settings.max_query_count),
        "performance_sample_count_override": int(settings.performance_sample_count_override),
        "server_target_qps": float(settings.server_target_qps),
        "server_target_latency_ns": int(settings.server_target_latency_ns),
        "offline_expected_qps": float(settings.offline_expected_qps),
        "single_stream_expected_latency_ns": int(settings.single_stream_expected_latency_ns),
        "multi_stream_expected_latency_ns": int(settings.multi_stream_expected_latency_ns),
        "multi_stream_samples_per_query": int(settings.multi_stream_samples_per_query),
    }


def build_log_settings(outdir: str | os.PathLike, *, trace: bool = False) -> lg.LogSettings:
    """LogSettings writing into ``outdir``, which is created first (LoadGen silently runs nothing otherwise).

    The trace (~280 bytes per sample) is off unless ``trace``.
    """
    directory = Path(outdir)
    directory.mkdir(parents=True, exist_ok=True)
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = os.fspath(directory)
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = bool(trace)
    return log_settings
