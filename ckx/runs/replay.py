"""`ckx replay experiment`: re-run a recorded point with its recorded choices and dependency envs."""
from __future__ import annotations

from typing import Any

from ckx.core.cid import Cid
from ckx.core.errors import Ambiguous, NotFound, UsageError
from ckx.runs.benchmark import rep_dict, run_repetitions
from ckx.runs.experiment import (
    MODULE, Experiment, Point, env_text, load_experiment, machine_label, platform_features,
)
from ckx.runs.recording import record_point
from ckx.runs.stats import METRIC_KEY, fmt, point_statistics
from ckx.software.envs import load_env
from ckx.store.context import Context


# -- replay --------------------------------------------------------------------------------------
def _env_exists(ctx: Context, uid: str) -> bool:
    try:
        load_env(ctx, uid)
    except NotFound:
        return False
    return True


def _pick_point(ctx: Context, experiment: Experiment, wanted: Any) -> Point:
    if wanted:
        return experiment.point(str(wanted))
    if not experiment.points:
        raise NotFound(f"{experiment.cid} has no points to replay")
    if len(experiment.points) == 1:
        return experiment.points[0]
    options = [f"{p.uid} {p.choices.get('cmd_key')} {env_text(p.choices)} on {machine_label(p.platform)}"
               for p in experiment.points]
    picked = ctx.reporter.choose(f"{experiment.cid} has {len(options)} points; replay which?", options, 0) \
        if ctx.interactive else None
    if picked is None:
        raise Ambiguous(f"{experiment.cid} has {len(options)} points: say which with --point=UID", options)
    return experiment.points[picked]


def action_replay(ctx: Context, inp: dict) -> dict:
    """``ckx replay experiment:NAME [--point=UID] [--repetitions=N] [--record]``: re-run a point's choices.

    Uses the recorded command key, env, dep_add_tags, offline flag and extra arguments; forces each recorded
    dependency env that still exists, and says which recorded versions are not available now. ``inp`` holds
    the typed options the action table declares.
    """
    experiment = load_experiment(ctx, Cid(module=MODULE, entry=inp.get("entry"), repo=inp.get("repo")))
    point = _pick_point(ctx, experiment, inp.get("point"))
    recorded = point.choices
    program = recorded.get("program")
    if not program:
        raise UsageError(f"point {point.uid} of {experiment.cid} does not say which program it ran")
    cmd_key = recorded.get("cmd_key")
    if not cmd_key:
        raise UsageError(f"point {point.uid} of {experiment.cid} does not say which command key it ran")
    forced: dict[str, str] = {}
    missing: list[dict] = []
    for name, dep in sorted((recorded.get("deps") or {}).items()):
        env_uid = dep.get("env_uid") if isinstance(dep, dict) else None
        if env_uid and _env_exists(ctx, env_uid):
            forced[name] = env_uid
        else:
            missing.append({"name": name, "env_uid": env_uid, "version": dep.get("version"), "soft": dep.get("soft")})
    for item in missing:
        ctx.info(f"dependency {item['name']}: the recorded env {item['env_uid'] or '?'} (version "
                 f"{item['version'] or '?'}) is not available here; it will be resolved again")
    extra = [str(a) for a in recorded.get("extra_args") or []] + list(inp.get("rest") or [])
    program_cid = program if ":" in str(program) else f"program:{program}"
    choices, reps, failure = run_repetitions(
        ctx, program_cid, cmd_key=cmd_key, repetitions=inp.get("repetitions") or 1, env=recorded.get("env") or {},
        dep_add_tags=recorded.get("dep_add_tags") or {}, deps=forced, offline=bool(recorded.get("offline")),
        print_files=list(inp.get("print_files") or []), extra_args=extra,
        timers=not inp.get("skip_print_timers"), timeout_s=inp.get("timeout"),
    )
    if failure is not None:
        raise failure
    differences = []
    for name, dep in sorted((recorded.get("deps") or {}).items()):
        now = (choices.get("deps") or {}).get(name) or {}
        if dep.get("version") != now.get("version"):
            differences.append({"name": name, "recorded": dep.get("version"), "now": now.get("version")})
            ctx.info(f"dependency {name}: recorded version {dep.get('version')}, replayed with {now.get('version')}")
    result: dict[str, Any] = {"return": 0, "experiment": experiment.cid, "point": point.uid,
                              "recorded_choices": recorded, "choices": choices, "missing_deps": missing,
                              "version_differences": differences, "repetitions": [rep_dict(r) for r in reps]}
    stats = point_statistics([{"characteristics": r.characteristics, "duration_s": r.duration_s} for r in reps])
    result["statistics"] = stats
    lines = [f"replayed point {point.uid} of {experiment.cid} ({cmd_key})"]
    before = point.metric_stats()
    after = stats.get(METRIC_KEY)
    if before and after:
        lines.append(f"{point.metric.get('name')}: recorded median {fmt(before['median'])}, now {fmt(after['median'])}")
    if inp.get("record") and reps:
        if experiment.record is None or not ctx.registry.get(experiment.record.repo).writable:
            raise UsageError(f"{experiment.cid} is in a read-only repo", hint="use ckx benchmark --record_repo=...")
        outcome = record_point(ctx, name=experiment.name, choices=choices, features=platform_features(ctx),
                               repetitions=reps, repo=experiment.record.repo, tags=list(point.tags))
        result["recorded_point"] = outcome.point.uid
        lines.append(f"recorded {len(outcome.added)} repetition(s) in point {outcome.point.uid}")
    result["text"] = "\n".join(lines)
    return result


__all__ = ["action_replay"]
