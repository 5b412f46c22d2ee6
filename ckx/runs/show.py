"""`ckx show experiment`: a table of each experiment's points."""
from __future__ import annotations

from typing import Any

from ckx.core.text import table
from ckx.runs.experiment import (
    Experiment, Point, env_text, experiment_records, machine_label, metric_text, read_experiment, request_cids,
)
from ckx.store.context import Context


# -- show ----------------------------------------------------------------------------------------
def show_rows(experiment: Experiment) -> list[list[Any]]:
    """Rows of ``ckx show``: point, program, cmd_key, env, machine, reps, metric, median ± stdev."""
    rows = []
    for point in experiment.points:
        rows.append([point.uid, point.choices.get("program"), point.choices.get("cmd_key"), env_text(point.choices),
                     machine_label(point.platform), len(point.repetitions), point.metric.get("name") or "-",
                     metric_text(point)])
    return rows


def action_show(ctx: Context, inp: dict) -> dict:
    """``ckx show experiment:NAME``: a table of its points (several names, wildcards or none: all of them)."""
    records = experiment_records(ctx, request_cids(inp), tags=inp.get("tags"))
    columns = ["point", "program", "cmd_key", "env", "platform", "reps", "metric", "median ± stdev"]
    experiments = []
    blocks = []
    for record in records:
        exp = read_experiment(record.path, record.meta_path, record)
        experiments.append({"cid": record.cid, "path": str(record.path), "tags": exp.tags,
                            "migrated_from": exp.migrated_from,
                            "points": [_point_brief(p) for p in exp.points]})
        heading = f"{record.cid} ({exp.uid}) tags: {','.join(exp.tags) or '-'}; {len(exp.points)} point(s)"
        if exp.migrated_from is not None:
            heading += f" [stored in schema_version {exp.migrated_from}, read through migration]"
        rows = show_rows(exp)
        blocks.append(heading + ("\n" + table(columns, rows) if rows else "\n(no points)"))
    if not records:
        return {"return": 0, "experiments": [], "text": "no experiments"}
    return {"return": 0, "experiments": experiments, "text": "\n\n".join(blocks)}


def _point_brief(point: Point) -> dict:
    return {"uid": point.uid, "choices": point.choices, "platform": point.platform,
            "repetitions": len(point.repetitions), "metric": point.metric, "metric_statistics": point.metric_stats(),
            "tags": list(point.tags)}


__all__ = ["action_show", "show_rows"]
