"""Find the performance to aim at: short runs, then a user.conf with the measured QPS and latencies."""
# Offline gives the throughput (Offline target_qps; Server starts at SERVER_SHARE of it, as a Server
# run at full throughput queues without bound), SingleStream the p90 latency, MultiStream the p99
# latency of its queries. Later runs read the conf after the program's user.conf (--found-conf-dir).
from __future__ import annotations

import argparse
import hashlib
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from .fileio import write_text_atomic

DEFAULT_SECONDS = 5.0
SERVER_SHARE = 0.8
MEASURED = ("Offline", "SingleStream", "MultiStream")


def found_conf_path(args: argparse.Namespace) -> Path | None:
    """Where a find-performance run for this backend, model and thread/batch set-up keeps its conf."""
    if not args.found_conf_dir:
        return None
    model = os.fspath(Path(args.model).resolve()) if args.model else "-"
    key = "|".join([args.backend, model, str(args.threads or ""), str(args.max_batchsize), args.profile])
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]
    return Path(args.found_conf_dir) / f"{args.backend}-{digest}.conf"


def conf_text(args: argparse.Namespace, found: dict[str, float]) -> str:
    """The user.conf lines (expectations only) for what was measured."""
    lines = [f"# Measured by a find-performance run at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}:",
             f"# backend {args.backend}, model {args.model or '-'}, threads {args.threads or 'all'}, "
             f"max batch {args.max_batchsize}. Expectations only: nothing the rules fix.",
             f"*.Offline.target_qps = {found['offline_qps']:.2f}",
             f"*.Server.target_qps = {found['server_qps']:.2f}",
             f"*.SingleStream.target_latency = {math.ceil(found['singlestream_latency_ms'])}",
             f"*.MultiStream.target_latency = {math.ceil(found['multistream_latency_ms'])}"]
    return "\n".join(lines) + "\n"


def find_performance(prep: Any, output: Path, run_test: Callable[..., dict]) -> dict[str, Any]:
    """Short performance runs of Offline, SingleStream and MultiStream; write the conf and return the result."""
    args = prep.args
    seconds = args.time or DEFAULT_SECONDS
    results: dict[str, dict[str, Any]] = {}
    for scenario in MEASURED:
        scenario_args = argparse.Namespace(**{**vars(args), "scenario": scenario, "time": seconds})
        results[scenario] = run_test(replace(prep, args=scenario_args), output / scenario, accuracy=False)
    latency = {s: results[s].get("latency_ms") or {} for s in MEASURED}
    offline_qps = float(results["Offline"]["samples_per_second"] or 0.0)
    found = {"offline_qps": offline_qps, "server_qps": offline_qps * SERVER_SHARE,
             "singlestream_latency_ms": float(latency["SingleStream"].get("p90") or 0.0),
             "multistream_latency_ms": float(latency["MultiStream"].get("p99") or 0.0)}
    text = conf_text(args, found)
    write_text_atomic(output / "user.conf", text)
    target = found_conf_path(args)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(target, text)
    result = dict(results["Offline"])
    result.update(mode="find-performance", scenario="all", found=found, found_conf=os.fspath(target) if target else None,
                  runs={s: {"metric": r.get("metric"), "latency_ms": r.get("latency_ms")} for s, r in results.items()},
                  metric={"name": "offline_qps", "value": offline_qps, "unit": "samples/s"})
    result["invalid_reasons"] = ["find-performance: short exploratory runs, not a submission"]
    result["valid_for_submission"] = False
    return result
