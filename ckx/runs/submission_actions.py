"""The ``generate submission`` and ``check submission`` actions (options, the runs they start, their text)."""
from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from ckx.store.context import Context
from ckx.core.errors import UsageError
from ckx.core.inputs import as_bool
from ckx.runs import official
from ckx.runs.submission import (DEFAULT_PROGRAM, DEFAULT_VERSION, KEY_NAMES, SCENARIO_SETS, SHORT_OPS, build_tree,
                         collect_runs, default_run_dirs)
from ckx.runs.sysdesc import SYSTEM_FIELDS
from ckx.transfer.fetch import offline_from_env
from ckx.runs.program import run_program
from ckx.runs.experiment import load_experiment
from ckx.core.text import table


def _dict(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"--{name} takes fields: --{name}.FIELD=VALUE (or {{\"{name}\": {{...}}}} in @file.json)")
    return dict(value)


def _system_type(inp: Mapping[str, Any]) -> str:
    value = str(inp.get("system_type") or "edge")
    if value not in SCENARIO_SETS:
        raise UsageError(f"--system_type must be one of {', '.join(SCENARIO_SETS)}, not {value!r}")
    return value


def _scenarios(inp: Mapping[str, Any], system_type: str) -> tuple[str, ...]:
    value = inp.get("scenarios")
    if not value:
        return SCENARIO_SETS[system_type]
    names = [s.strip() for s in str(value).split(",") if s.strip()]
    unknown = [s for s in names if s not in KEY_NAMES]
    if unknown:
        raise UsageError(f"--scenarios: unknown {', '.join(unknown)}; known: {', '.join(KEY_NAMES)}")
    return tuple(names)


def _str_map(value: Any, name: str) -> dict[str, str]:
    return {str(k): "1" if v is True else str(v) for k, v in _dict(value, name).items()}


def run_for_tree(ctx: Context, inp: Mapping[str, Any], scenarios: tuple[str, ...], *, short: bool) -> list[Path]:
    """For each scenario, a TEST01 run (with its performance and accuracy references) then a TEST04 run
    verified against the same performance run; returns their run directories."""

    program = str(inp.get("program") or DEFAULT_PROGRAM)
    env = _str_map(inp.get("env"), "env")
    add_tags = _str_map(inp.get("dep_add_tags"), "dep_add_tags")
    offline = as_bool(inp.get("offline"), "offline") or offline_from_env()
    dirs: list[Path] = []
    for scenario in scenarios:
        scenario_env = dict(env)
        if short:
            scenario_env["EXTRA_OPS"] = " ".join(filter(None, [SHORT_OPS[scenario], env.get("EXTRA_OPS", "")]))
        key = KEY_NAMES[scenario]
        first = run_program(ctx, f"program:{program}", cmd_key=f"compliance-test01-{key}", env=scenario_env,
                            dep_add_tags=add_tags, offline=offline)
        second = run_program(ctx, f"program:{program}", cmd_key=f"compliance-test04-{key}",
                             env={**scenario_env, "MLPERF_COMPLIANCE_RESULTS": str(first.run_dir / "reference")},
                             dep_add_tags=add_tags, offline=offline)
        dirs += [first.run_dir, second.run_dir]
    return dirs


def experiment_run_dirs(ctx: Context, names: str) -> list[Path]:
    """The run directories of every repetition recorded in the named experiments (comma-separated)."""

    dirs = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        experiment = load_experiment(ctx, name if ":" in name else f"experiment:{name}")
        for point in experiment.points:
            dirs += [Path(rep["run_dir"]) for rep in point.repetitions if rep.get("run_dir")]
    return sorted(set(dirs))


def _metric_text(metric: Any) -> str:
    if not isinstance(metric, dict) or metric.get("value") is None:
        return ""
    value = metric["value"]
    return f"{metric.get('name')}={value:.3f}" if isinstance(value, float) else f"{metric.get('name')}={value}"


def action_generate(ctx: Context, inp: dict) -> dict:
    """``ckx generate submission --out=DIR [--run [--short] | --run_dirs=a,b | --experiment=NAME]
    [--system.FIELD=V] [@system.json]``."""
    out_value = inp.get("out")
    if not out_value or out_value is True:
        raise UsageError("'generate submission' needs --out=DIR")
    out = Path(str(out_value)).expanduser().resolve()
    division = str(inp.get("division") or "closed")
    if division not in ("closed", "open"):
        raise UsageError(f"--division must be closed or open, not {division!r}")
    system_type = _system_type(inp)
    scenarios = _scenarios(inp, system_type)
    user_system = _dict(inp.get("system"), "system")
    user_system.update({k: inp[k] for k in ("submitter", "status") if k in inp and k not in user_system})
    started = time.time()
    if as_bool(inp.get("run"), "run"):
        dirs = run_for_tree(ctx, inp, scenarios, short=as_bool(inp.get("short"), "short"))
    elif inp.get("run_dirs"):
        dirs = [Path(p.strip()).expanduser() for p in str(inp["run_dirs"]).split(",") if p.strip()]
    elif inp.get("experiment"):
        dirs = experiment_run_dirs(ctx, str(inp["experiment"]))
    else:
        dirs = default_run_dirs(ctx, inp.get("program"))
    runs = collect_runs(dirs)
    report = build_tree(ctx, runs, out, scenarios=scenarios, division=division, user_system=user_system,
                        user_measurements=_dict(inp.get("measurements"), "measurements"), system_type=system_type,
                        force=as_bool(inp.get("force"), "force"))
    report["duration_s"] = round(time.time() - started, 1)
    rows = [[r["scenario"], _metric_text(r.get("metric")), "yes" if r.get("valid") else "no",
             r.get("accuracy", ""), r.get("TEST01", ""), r.get("TEST04", "")] for r in report["rows"]]

    lines = [table(["scenario", "metric", "LoadGen valid", "accuracy (official script)", "TEST01", "TEST04"], rows),
             f"submission tree: {out} (full accuracy logs kept in {report['full_logs']})"]
    if report["empty_system_fields"]:
        lines.append("system fields still empty (give them with --system.FIELD=VALUE or @system.json): "
                     + ", ".join(report["empty_system_fields"]))
    lines.append(f"next: ckx check submission --dir={out}")
    return {"return": 0, **report, "text": "\n".join(lines)}


def _verdict_rows(messages: list[official.CheckerMessage], tree: Path) -> list[list[str]]:
    """ERROR and WARNING lines, with the tree's own path left out of the text so the table stays narrow."""
    results = re.compile(re.escape(f"{tree}{os.sep}") + r"(?:[^/\s]+/){2}results/(?:[^/\s]+/){2}")
    return [[m.level, m.check, results.sub("", m.text).replace(f"{tree}{os.sep}", "")]
            for m in messages if m.level in ("ERROR", "WARNING")]


def action_check(ctx: Context, inp: dict) -> dict:
    """``ckx check submission --dir=DIR [--version=v6.1]``: the official checker's verdict as a table."""
    value = inp.get("dir") or inp.get("out")
    if not value or value is True:
        raise UsageError("'check submission' needs --dir=DIR (a tree from 'ckx generate submission')")
    tree = Path(str(value)).expanduser().resolve()
    if not tree.is_dir():
        raise UsageError(f"--dir {tree} is not a directory")
    source = official.find_source(ctx)
    version = str(inp.get("version") or DEFAULT_VERSION)
    known = source.checker_versions()
    if version not in known:
        raise UsageError(f"the installed checker ({source.root}) does not know {version}; it knows {', '.join(known)}")
    with tempfile.TemporaryDirectory(prefix="ckx-checker-") as scratch:
        run = official.run_checker(source, tree, version, csv=Path(scratch) / "summary.csv")
        summary = (Path(scratch) / "summary.csv").read_text(encoding="utf-8") if (Path(scratch) / "summary.csv").is_file() else ""
    messages = official.checker_messages(run.output)
    errors = [m.text for m in messages if m.level == "ERROR"]
    warnings = [m.text for m in messages if m.level == "WARNING"]
    passed = run.returncode == 0 and not errors

    rows = _verdict_rows(messages, tree)
    text = [table(["level", "check", "message"], rows) if rows else "no errors or warnings",
            f"checker {version} ({source.root}): {'PASSED' if passed else 'FAILED'} with {len(errors)} error(s), "
            f"{len(warnings)} warning(s) (exit {run.returncode})"]
    return {"return": 0, "passed": passed, "errors": errors, "warnings": warnings, "returncode": run.returncode,
            "messages": [{"level": m.level, "check": m.check, "text": m.text} for m in messages],
            "version": version, "output": run.output, "summary_csv": summary, "text": "\n".join(text)}


__all__ = ["action_check", "action_generate", "SYSTEM_FIELDS"]
