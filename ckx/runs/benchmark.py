"""`ckx benchmark program`: run a program N times, report each repetition and the statistics, record a point."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ckx.core.cid import check_name
from ckx.core.errors import ProgramFailed, UsageError
from ckx.core.text import table
from ckx.runs.experiment import MODULE, Experiment, Repetition, plain, platform_features, point_key
from ckx.runs.program import run_program
from ckx.runs.recording import record_point, timestamp
from ckx.runs.stats import fmt, numeric_characteristics, point_statistics, stats_table
from ckx.store.context import Context
from ckx.store.index import Query
from ckx.transfer.fetch import offline_from_env


# -- running -------------------------------------------------------------------------------------
RUN_SECTION = "run"  # the runner's own record inside result.json: choices and timings, not characteristics


def _characteristics(result: Mapping[str, Any]) -> dict:
    """A run's result.json without the runner's ``run`` section (it repeats the choices)."""
    return {k: v for k, v in (result or {}).items() if k != RUN_SECTION}


def _repetition_from_run(result: Any, print_files: Sequence[str], started: str) -> tuple[Repetition, dict[str, str]]:
    """A Repetition from a RunResult, and the text of the print_files the run left (missing ones left out)."""
    run_dir = Path(result.run_dir)
    files = []
    texts: dict[str, str] = {}
    for name in print_files:
        path = run_dir / name
        if path.is_file():
            files.append((name, path))
            texts[name] = path.read_text(encoding="utf-8", errors="replace")
    rep = Repetition(characteristics=_characteristics(result.result), run_dir=str(run_dir), started=started,
                     duration_s=round(float(result.duration_s), 3) if result.duration_s is not None else None,
                     files=tuple(files))
    return rep, texts


def _rep_line(number: int, total: int, rep: Repetition, *, timers: bool) -> str:
    chars = rep.characteristics
    metric = chars.get("metric") if isinstance(chars.get("metric"), dict) else None
    parts = [f"repetition {number}/{total}:"]
    if metric:
        parts.append(f"{metric.get('name')} = {fmt(metric.get('value'))} {metric.get('unit') or ''}".rstrip())
    else:
        shown = list(numeric_characteristics(chars).items())[:4]
        parts.append(", ".join(f"{k} = {fmt(v)}" for k, v in shown) if shown else "no result.json metrics")
    if "valid" in chars:
        parts.append("(valid)" if chars.get("valid") else "(invalid)")
    if timers and rep.duration_s is not None:
        parts.append(f"in {rep.duration_s:.2f} s")
    return " ".join(parts)


def _program_cid(inp: Mapping[str, Any]) -> str:
    entry = inp.get("entry")
    if inp.get("module") != "program" or not entry:
        raise UsageError("'benchmark' needs a program", hint="usage: ckx benchmark program:NAME --cmd_key=KEY")
    return f"{inp['repo']}:program:{entry}" if inp.get("repo") else f"program:{entry}"


def run_repetitions(
    ctx: Context,
    program: str,
    *,
    cmd_key: str,
    repetitions: int,
    env: Mapping[str, str],
    dep_add_tags: Mapping[str, str],
    deps: Mapping[str, str],
    offline: bool,
    print_files: Sequence[str],
    extra_args: Sequence[str],
    timers: bool = True,
    timeout_s: float | None = None,
) -> tuple[dict, list[Repetition], ProgramFailed | None]:
    """Run ``program`` ``repetitions`` times; returns (the choices of the first run, the repetitions, the failure).

    Each repetition's headline metric (and print_files) is reported with ctx.info as it finishes. A failed
    repetition stops the loop; the repetitions before it are returned along with the error.
    """
    choices: dict = {}
    done: list[Repetition] = []
    for number in range(1, repetitions + 1):
        ctx.info(f"--- {program} --cmd_key={cmd_key}: repetition {number}/{repetitions}")
        started = timestamp()
        try:
            result = run_program(ctx, program, cmd_key=cmd_key, env=dict(env), dep_add_tags=dict(dep_add_tags),
                                 deps=dict(deps), offline=offline, print_files=list(print_files),
                                 extra_args=list(extra_args), stream=not ctx.quiet, timeout_s=timeout_s)
        except ProgramFailed as exc:
            return choices, done, exc
        run_choices = plain(dict(result.choices or {}))
        if not choices:
            choices = run_choices
        elif point_key(run_choices, {}) != point_key(choices, {}):
            ctx.warn(f"repetition {number} resolved other dependencies than repetition 1; it is kept with "
                     "repetition 1's choices")
        rep, texts = _repetition_from_run(result, print_files, started)
        if not rep.characteristics:
            ctx.warn(f"repetition {number} wrote no result.json in {result.run_dir}: it has no characteristics")
        for name in print_files:
            if name in texts:
                ctx.info(f"--- {name} (repetition {number})\n{texts[name].rstrip()}")
            else:
                ctx.warn(f"--print_files: repetition {number} left no {name} in {result.run_dir}")
        done.append(rep)
        ctx.info(_rep_line(number, repetitions, rep, timers=timers))
    return choices, done, None


def action_benchmark(ctx: Context, inp: dict) -> dict:
    """``ckx benchmark program:NAME --cmd_key=KEY [--repetitions=N] [--record ...]``: run N times, show statistics.

    With ``--record`` the repetitions are added to experiment ``--record_uoa`` (default: the program's name) in
    ``--record_repo`` (default: local). A failing repetition stops the run (exit 6); with ``--record`` the
    repetitions before it are still recorded. ``inp`` holds the typed options the action table declares.
    """
    program = _program_cid(inp)
    cmd_key = inp.get("cmd_key")
    if not cmd_key:
        raise UsageError("'benchmark' needs --cmd_key=KEY", hint="'ckx load program:NAME' lists its run_cmds")
    record = bool(inp.get("record"))
    record_uoa = inp.get("record_uoa")
    if record_uoa:
        check_name(record_uoa, "experiment name")
    if record and inp.get("record_repo"):
        target_repo = ctx.registry.get(inp["record_repo"])
        if not target_repo.writable:
            raise UsageError(target_repo.read_only_reason() or f"repo {target_repo.name!r} is read-only",
                             hint="record into a native repo: --record_repo=local, or one made with "
                                  "'ckx add repo:NAME'")
    if not record and (record_uoa or inp.get("record_repo")):
        ctx.warn("--record_uoa and --record_repo have no effect without --record: nothing will be recorded")
    print_files = list(inp.get("print_files") or [])
    tags = list(inp.get("tags") or [])
    choices, reps, failure = run_repetitions(
        ctx, program, cmd_key=cmd_key, repetitions=inp.get("repetitions") or 1, env=dict(inp.get("env") or {}),
        dep_add_tags=dict(inp.get("dep_add_tags") or {}), deps=dict(inp.get("deps") or {}),
        offline=bool(inp.get("offline")) or offline_from_env(), print_files=print_files,
        extra_args=list(inp.get("rest") or []), timers=not inp.get("skip_print_timers"), timeout_s=inp.get("timeout"),
    )
    stats = point_statistics([{"characteristics": r.characteristics, "duration_s": r.duration_s} for r in reps])
    result: dict[str, Any] = {"return": 0, "program": program, "cmd_key": cmd_key, "choices": choices,
                              "repetitions": [rep_dict(r) for r in reps], "statistics": stats}
    lines: list[str] = []
    if record and reps:
        name = record_uoa or str(choices.get("program") or inp["entry"])
        check_name(name, "experiment name")
        features = platform_features(ctx)
        outcome = record_point(ctx, name=name, choices=choices, features=features, repetitions=reps,
                               repo=inp.get("record_repo"), tags=tags + [cmd_key])
        exp = outcome.experiment
        result.update(experiment=_cid_of(ctx, exp), experiment_path=str(exp.path),
                      point=outcome.point.uid, added_repetitions=list(outcome.added),
                      created_experiment=outcome.created_experiment, created_point=outcome.created_point)
        verb = "new point" if outcome.created_point else "point"
        lines.append(f"recorded {len(outcome.added)} repetition(s) in {result['experiment']} ({exp.path}), "
                     f"{verb} {outcome.point.uid} (now {len(outcome.point.repetitions)} repetition(s))")
    if failure is not None:
        note = ""
        if record and reps:
            note = f"; {len(reps)} earlier repetition(s) were recorded in {result.get('experiment')}"
        raise ProgramFailed(f"{failure.message}{note}", hint=failure.hint)
    if not inp.get("skip_print_stats") and stats:
        spec = stats_table(stats)
        if spec["rows"]:
            lines.insert(0, table(spec["columns"], spec["rows"]))
    result["text"] = "\n".join(lines)
    return result


def rep_dict(rep: Repetition) -> dict:
    return {"characteristics": rep.characteristics, "run_dir": rep.run_dir, "started": rep.started,
            "duration_s": rep.duration_s, "files": [name for name, _ in rep.files]}


def _cid_of(ctx: Context, experiment: Experiment) -> str:
    for record in ctx.index.query(Query(module=MODULE, name=experiment.uid)):
        if record.path == experiment.path:
            return record.cid
    return f"{MODULE}:{experiment.name}"


__all__ = ["action_benchmark", "rep_dict", "run_repetitions"]
