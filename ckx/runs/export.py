"""`ckx export experiment`: the repetitions as CSV rows or the points as one JSON document."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from ckx.core.errors import NotFound, UsageError
from ckx.core.jsonio import write_text_atomic
from ckx.runs.experiment import (
    SCHEMA_VERSION, Experiment, experiment_records, machine_matches, read_experiment, request_cids,
)
from ckx.runs.stats import SETTINGS_PREFIXES, flatten
from ckx.store.context import Context


# -- export --------------------------------------------------------------------------------------
FIXED_COLUMNS = ["experiment", "point", "repetition", "started", "duration_s", "run_dir"]


def export_rows(experiments: Sequence[Experiment], machine: str | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per repetition: experiment, point, repetition number, choices.*, platform.*, metrics.*.

    ``machine`` keeps the points of the machines it names (see ``machine_matches``); a point that ran on
    a cluster node has a ``node`` column.
    """
    rows: list[dict[str, Any]] = []
    for exp in experiments:
        for point in exp.points:
            if not machine_matches(point.platform, machine):
                continue
            choices = {f"choices.{k}": v for k, v in flatten(point.choices).items()}
            platform = {f"platform.{k}": v for k, v in point.platform.items()}
            for number, rep in enumerate(point.repetitions, start=1):
                row: dict[str, Any] = {"experiment": exp.cid, "point": point.uid, "repetition": number,
                                       "started": rep.get("started"), "duration_s": rep.get("duration_s"),
                                       "run_dir": rep.get("run_dir")}
                if point.node:
                    row["node"] = point.node
                row.update(choices)
                row.update(platform)
                for key, value in flatten(rep.get("characteristics") or {}).items():
                    if not key.startswith(SETTINGS_PREFIXES):
                        row[f"metrics.{key}"] = value
                rows.append(row)
    extra = sorted({k for row in rows for k in row} - set(FIXED_COLUMNS),
                   key=lambda k: ({"choices": 0, "platform": 1, "metrics": 2}.get(k.split(".")[0], 3), k))
    return FIXED_COLUMNS + extra, rows


def to_csv(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV text with a header; None becomes an empty cell, booleans true/false."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            cells.append("" if value is None else ("true" if value is True else "false" if value is False else value))
        writer.writerow(cells)
    return buffer.getvalue()


def experiment_document(exp: Experiment, machine: str | None = None) -> dict:
    """The JSON export of one experiment: identity, meta and full points (of the machines ``machine`` names)."""
    return {"cid": exp.cid, "uid": exp.uid, "alias": exp.alias, "tags": exp.tags, "path": str(exp.path),
            "meta": exp.meta, "points": [dict(p.to_dict(), platform=p.platform) for p in exp.points
                                         if machine_matches(p.platform, machine)]}


def action_export(ctx: Context, inp: dict) -> dict:
    """``ckx export experiment:NAME --format=csv|json [--out=FILE]``: the repetitions as CSV or the points as JSON.

    ``inp`` holds the typed options the action table declares (``format`` is already csv or json).
    """
    fmt_name = inp.get("format") or "csv"
    records = experiment_records(ctx, request_cids(inp), tags=inp.get("tags"))
    if not records:
        raise NotFound("no experiments to export", hint="record one with 'ckx benchmark ... --record'")
    experiments = [read_experiment(r.path, r.meta_path, r) for r in records]
    if fmt_name == "csv":
        columns, rows = export_rows(experiments, inp.get("machine"))
        text = to_csv(columns, rows)
        result: dict[str, Any] = {"return": 0, "format": "csv", "rows": len(rows), "columns": columns}
    else:
        document = {"schema_version": SCHEMA_VERSION, "experiments": [experiment_document(e, inp.get("machine"))
                                                                  for e in experiments]}
        text = json.dumps(document, indent=2, sort_keys=True, default=str) + "\n"
        result = {"return": 0, "format": "json", "experiments": len(experiments)}
    out = inp.get("out")
    if out:
        path = Path(out).expanduser()
        if path.is_dir():
            raise UsageError(f"--out={path} is a directory", hint="give a file name, e.g. --out=results.csv")
        write_text_atomic(path, text)
        result["out"] = str(path.resolve())
        result["text"] = f"wrote {result['out']}"
    else:
        result["content"] = text
        result["text"] = text.rstrip("\n")
    return result


__all__ = ["action_export", "experiment_document", "export_rows", "to_csv"]
