"""`ckx show experiment`: a table of each experiment's points, optionally one table per machine."""
from __future__ import annotations

from typing import Any, Sequence

from ckx.core.text import table
from ckx.runs.experiment import (
    Experiment, Point, env_text, experiment_records, machine_label, machine_matches, metric_text, read_experiment,
    request_cids,
)
from ckx.store.context import Context

COLUMNS = ["point", "program", "cmd_key", "env", "platform", "reps", "metric", "median ± stdev"]


# -- show ----------------------------------------------------------------------------------------
def show_rows(experiment: Experiment, points: Sequence[Point] | None = None) -> list[list[Any]]:
    """Rows of ``ckx show``: point, program, cmd_key, env, machine, reps, metric, median ± stdev."""
    rows = []
    for point in experiment.points if points is None else points:
        rows.append([point.uid, point.choices.get("program"), point.choices.get("cmd_key"), env_text(point.choices),
                     machine_label(point.platform), len(point.repetitions), point.metric.get("name") or "-",
                     metric_text(point)])
    return rows


def _failure_lines(points: Sequence[Point]) -> list[str]:
    lines = []
    for point in points:
        if not point.failed:
            continue
        failure = point.failure or {}
        where = f" on {failure.get('node') or point.node}" if (failure.get("node") or point.node) else ""
        first = str(failure.get("message") or "no message").splitlines()[0]
        lines.append(f"point {point.uid} failed{where}: {first}")
        tail = str(failure.get("log_tail") or "").strip()
        lines += [f"    {line}" for line in tail.splitlines()[-10:]]
    return lines


def _machines(points: Sequence[Point]) -> list[tuple[str, list[Point]]]:
    groups: dict[str, list[Point]] = {}
    for point in points:
        groups.setdefault(machine_label(point.platform), []).append(point)
    return list(groups.items())


def action_show(ctx: Context, inp: dict) -> dict:
    """``ckx show experiment:NAME [--machine=TEXT] [--group_by=machine]``: a table of its points.

    Several names, wildcards or none show several experiments. ``--machine`` keeps the points of the
    machines it names (host name, CPU or fingerprint prefix); ``--group_by=machine`` prints a table each.
    """
    records = experiment_records(ctx, request_cids(inp), tags=inp.get("tags"))
    wanted = inp.get("machine")
    by_machine = inp.get("group_by") == "machine"
    experiments = []
    blocks = []
    for record in records:
        exp = read_experiment(record.path, record.meta_path, record)
        points = [p for p in exp.points if machine_matches(p.platform, wanted)]
        experiments.append({"cid": record.cid, "path": str(record.path), "tags": exp.tags,
                            "migrated_from": exp.migrated_from,
                            "points": [_point_brief(p) for p in points],
                            "machines": [{"label": label, "points": [p.uid for p in group]}
                                         for label, group in _machines(points)]})
        shown = f"{len(points)} of {len(exp.points)}" if wanted else f"{len(exp.points)}"
        heading = f"{record.cid} ({exp.uid}) tags: {','.join(exp.tags) or '-'}; {shown} point(s)"
        if exp.migrated_from is not None:
            heading += f" [stored in schema_version {exp.migrated_from}, read through migration]"
        if not points:
            blocks.append(heading + "\n(no points" + (f" on a machine matching {wanted!r})" if wanted else ")"))
            continue
        parts = [heading]
        if by_machine:
            for label, group in _machines(points):
                parts.append(f"machine {label} ({group[0].platform.get('fingerprint') or 'no fingerprint'}): "
                             f"{len(group)} point(s)\n" + table(COLUMNS, show_rows(exp, group)))
        else:
            parts.append(table(COLUMNS, show_rows(exp, points)))
        parts += _failure_lines(points)
        blocks.append("\n".join(parts))
    if not records:
        return {"return": 0, "experiments": [], "text": "no experiments"}
    return {"return": 0, "experiments": experiments, "text": "\n\n".join(blocks)}


def _point_brief(point: Point) -> dict:
    brief = {"uid": point.uid, "choices": point.choices, "platform": point.platform,
             "repetitions": len(point.repetitions), "metric": point.metric, "metric_statistics": point.metric_stats(),
             "tags": list(point.tags), "status": point.status}
    if point.node:
        brief["node"] = point.node
    if point.failure:
        brief["failure"] = point.failure
    if point.sweep:
        brief["sweep"] = point.sweep
    return brief


__all__ = ["action_show", "show_rows"]
