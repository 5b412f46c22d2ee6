"""`ckx benchmark ... --sweep.*`: run (or ``--plan``) every combination of a sweep and record one point each.

Resumable: a combination whose point is recorded already (same choices; on this machine for the local
executor, on any node for Ray) is skipped unless ``--force``. Each finished combination is recorded at once,
a failed one as a failed point with its log tail; the sweep goes on unless ``--max_failures`` is reached.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from ckx.core.cid import check_name
from ckx.core.errors import CkxError, NotFound, ProgramFailed, UsageError
from ckx.core.text import table
from ckx.runs.benchmark import _program_cid, action_benchmark as benchmark_once
from ckx.runs.executors import LocalExecutor, Outcome, RayExecutor, RunSettings
from ckx.runs.experiment import MODULE, Experiment, platform_features, read_experiment
from ckx.runs.program_entry import load_program
from ckx.runs.recording import record_point
from ckx.runs.sweep import (
    Combination, Status, combinations, duration_text, expected_seconds, machine_of, parse_sweep, statuses,
)
from ckx.store.context import Context
from ckx.store.generic import _target_repo
from ckx.transfer.fetch import offline_from_env

EXECUTORS = ("local", "ray")


def action_benchmark(ctx: Context, inp: dict) -> dict:
    """``ckx benchmark program:NAME ...``: one point, or with ``--sweep.*`` every combination of a sweep."""
    if not inp.get("sweep"):
        for name in ("plan", "max_failures", "force"):
            if inp.get(name):
                raise UsageError(f"--{name} applies to a sweep", hint="name what to sweep: --sweep.env.VAR=1,2")
        if inp.get("executor") not in (None, "local") or inp.get("ray_address"):
            raise UsageError("--executor and --ray_address apply to a sweep",
                             hint="name what to sweep: --sweep.env.VAR=1,2")
        return benchmark_once(ctx, inp)
    return run_sweep(ctx, inp)


# -- the experiment and what it holds ------------------------------------------------------------
def _experiment(ctx: Context, name: str, repo: str | None) -> Experiment | None:
    target = _target_repo(ctx, repo)
    entry_dir = target.module_dir(MODULE) / name
    if not (entry_dir / "meta.json").is_file():
        return None
    return read_experiment(entry_dir, entry_dir / "meta.json")


def _program_identity(ctx: Context, cid: str, executor: str) -> tuple[str, str | None, dict | None]:
    """(name, uid, run_cmds) of the program; on a cluster the driver may lack it, then (the name given, None, None)."""
    try:
        program = load_program(ctx, cid)
    except NotFound:
        if executor != "ray":
            raise
        return cid.split(":")[-1], None, None
    return program.name, program.record.uid, dict(program.meta.get("run_cmds") or {})


def _plan_rows(items: list[Status]) -> tuple[list[str], list[list[Any]]]:
    names = list(items[0].combination.params) if items else []
    rows = []
    for item in items:
        point = item.point or item.failed_point
        rows.append([item.combination.index, *item.combination.params.values(), item.state,
                     point.uid if point else "-", (point.node or "-") if point else "-"])
    return ["#", *names, "state", "point", "node"], rows


# -- running -------------------------------------------------------------------------------------
def run_sweep(ctx: Context, inp: dict) -> dict:
    """Plan or run a sweep; returns every combination's state, and what ran, was skipped and failed."""
    program = _program_cid(inp)
    executor_name = inp.get("executor") or "local"
    spec = parse_sweep(inp["sweep"])
    combos = combinations(spec, cmd_key=inp.get("cmd_key"), env=dict(inp.get("env") or {}),
                          dep_add_tags=dict(inp.get("dep_add_tags") or {}), deps=dict(inp.get("deps") or {}),
                          extra_args=list(inp.get("rest") or []))
    overlap = [n for n in spec.params if n.partition(".")[0] in ("env", "dep_add_tags", "deps")
               and n.partition(".")[2] in (inp.get(n.partition(".")[0]) or {})]
    if overlap:
        raise UsageError(f"--{overlap[0]} is both fixed and swept", hint=f"give it once: --sweep.{overlap[0]}=A,B")
    if inp.get("ray_address") and executor_name != "ray":
        raise UsageError("--ray_address needs --executor=ray")
    plan = bool(inp.get("plan"))
    if not plan and not inp.get("record"):
        raise UsageError("a sweep records its points so that it can resume: add --record [--record_uoa=NAME]",
                         hint="--plan shows the combinations without running them")
    name, program_uid, run_cmds = _program_identity(ctx, program, executor_name)
    if run_cmds is not None:
        unknown = sorted({c.cmd_key for c in combos} - set(run_cmds))
        if unknown:
            raise UsageError(f"program {name} has no command key {unknown[0]!r}",
                             hint=f"its keys: {', '.join(sorted(run_cmds))}")
    exp_name = inp.get("record_uoa") or name
    check_name(exp_name, "experiment name")
    repo = inp.get("record_repo")
    if repo:
        target = ctx.registry.get(repo)
        if not target.writable:
            raise UsageError(f"repo {target.name!r} is in CK's format and cannot be written",
                             hint="record into a native repo: --record_repo=local")
    # The local executor resumes this machine's points; on a cluster any node's point of a combination counts.
    machine = machine_of(platform_features(ctx)) if executor_name == "local" else None
    repetitions = inp.get("repetitions") or 1

    def current() -> list[Status]:
        return statuses(combos, _experiment(ctx, exp_name, repo), program=name, program_uid=program_uid,
                        machine=machine)

    items = current()
    per_combination, basis = expected_seconds(items, repetitions)
    todo = [s for s in items if s.state != "done" or inp.get("force")]
    seconds = per_combination * len(todo) if per_combination is not None else None
    counts = {state: sum(1 for s in items if s.state == state) for state in ("done", "failed", "todo")}
    columns, rows = _plan_rows(items)
    summary = (f"{len(items)} combination(s) of {name} into experiment:{exp_name}: {counts['done']} done, "
               f"{counts['failed']} failed before, {counts['todo']} never run; {len(todo)} to run"
               f" with --executor={executor_name}")
    if todo:
        summary += f"; expected time {duration_text(seconds)}" + (
            f" (from the run times of {basis} recorded point(s))" if basis else
            " (no point of this sweep is recorded yet)")
    result: dict[str, Any] = {
        "return": 0, "program": program, "experiment": f"{MODULE}:{exp_name}", "executor": executor_name,
        "parameters": {k: list(v) for k, v in spec.params.items()}, "exclude": spec.exclude,
        "combinations": [_status_dict(s) for s in items], "counts": counts, "to_run": len(todo),
        "expected_s": seconds,
    }
    if plan:
        result["text"] = table(columns, rows) + "\n" + summary
        return result
    ctx.info(summary)
    settings = RunSettings(program=program, repetitions=repetitions,
                           offline=bool(inp.get("offline")) or offline_from_env(),
                           print_files=tuple(inp.get("print_files") or ()), timeout_s=inp.get("timeout"))
    tags = list(inp.get("tags") or [])
    max_failures = inp.get("max_failures")
    ran, failed, stopped = [], [], False
    scratch = Path(tempfile.mkdtemp(prefix="sweep-", dir=_scratch_root(ctx)))
    started = time.monotonic()
    if executor_name == "ray":
        executor: Any = RayExecutor(ctx, address=inp.get("ray_address"), files_dir=scratch)
    else:
        executor = LocalExecutor(ctx)
    by_index = {s.combination.index: s for s in items}
    outcomes = executor.run([s.combination for s in todo], settings)
    try:
        for outcome in outcomes:
            before = by_index[outcome.combination.index]
            record = _record(ctx, outcome, before, name=exp_name, repo=repo, tags=tags, program_uid=program_uid,
                             program=name, cmd_tag=outcome.combination.cmd_key)
            (ran if outcome.ok else failed).append(record)
            state = "recorded" if outcome.ok else "FAILED"
            ctx.info(f"=== combination {outcome.combination.index} ({outcome.combination.label}): {state}"
                     f" point {record['point']}" + (f" on {outcome.node}" if outcome.node else ""))
            if not outcome.ok and max_failures and len(failed) >= max_failures:
                stopped = True
                break
    finally:
        outcomes.close()  # a Ray executor cancels its remaining tasks and stops the instance it started
        shutil.rmtree(scratch, ignore_errors=True)
    elapsed = time.monotonic() - started
    final = current()
    result.update(combinations=[_status_dict(s) for s in final], ran=ran, failed=failed,
                  skipped=len(items) - len(todo), elapsed_s=round(elapsed, 3), stopped=stopped,
                  counts={state: sum(1 for s in final if s.state == state) for state in ("done", "failed", "todo")})
    columns, rows = _plan_rows(final)
    lines = [table(columns, rows),
             f"ran {len(ran) + len(failed)} combination(s) in {elapsed:.1f} s: {len(ran)} recorded, {len(failed)} "
             f"failed; {result['skipped']} skipped (recorded before) in experiment:{exp_name}"]
    if stopped:
        lines.append(f"stopped after {len(failed)} failure(s) (--max_failures={max_failures}); "
                     f"{len(todo) - len(ran) - len(failed)} combination(s) not run")
    result["text"] = "\n".join(lines)
    if failed:
        details = "\n".join(f"  combination {f['index']} ({f['label']}): {f['message'].splitlines()[0]}"
                            for f in failed)
        raise ProgramFailed(f"{len(failed)} of {len(todo)} combination(s) failed (recorded as failed points in "
                            f"experiment:{exp_name}):\n{details}" + ("\n" + lines[-1] if stopped else ""),
                            hint=f"'ckx show experiment:{exp_name}' shows them with their log tails; "
                                 "re-running the sweep runs only what is not done")
    return result


def _scratch_root(ctx: Context) -> str:
    root = ctx.home.root / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return str(root)


def _status_dict(item: Status) -> dict[str, Any]:
    point = item.point or item.failed_point
    return {"index": item.combination.index, "params": dict(item.combination.params), "state": item.state,
            "cmd_key": item.combination.cmd_key, "env": dict(item.combination.env),
            "point": point.uid if point else None, "node": point.node if point else None}


def _record(ctx: Context, outcome: Outcome, before: Status, *, name: str, repo: str | None, tags: list[str],
            program: str, program_uid: str | None, cmd_tag: str) -> dict[str, Any]:
    """Record one outcome: its point (replacing the combination's failed record), or a failed point."""
    combo: Combination = outcome.combination
    sweep = {"params": dict(combo.params)}
    features = outcome.features or platform_features(ctx)
    if outcome.ok:
        replaces = [before.failed_point.uid] if before.failed_point is not None else []
        done = record_point(ctx, name=name, choices=outcome.choices, features=features,
                            repetitions=outcome.repetitions, repo=repo, tags=tags + [cmd_tag], node=outcome.node,
                            sweep=sweep, replaces=replaces)
        return {"index": combo.index, "label": combo.label, "point": done.point.uid, "node": outcome.node,
                "repetitions": len(outcome.repetitions)}
    failure = dict(outcome.failure or {"message": "the combination left no repetition", "log_tail": ""})
    choices = combo.choices(program, program_uid)
    done = record_point(ctx, name=name, choices=choices, features=features, repetitions=[], repo=repo,
                        tags=tags + [cmd_tag], node=outcome.node, sweep=sweep, failure=failure)
    return {"index": combo.index, "label": combo.label, "point": done.point.uid, "node": outcome.node,
            "message": str(failure.get("message") or ""), "log_tail": failure.get("log_tail")}


__all__ = ["EXECUTORS", "action_benchmark", "run_sweep"]
