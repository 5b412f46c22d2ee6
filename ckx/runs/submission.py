"""``ckx generate submission`` and ``ckx check submission``: an MLPerf tree from ckx runs, judged by the official checker."""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ckx.store.context import Context
from ckx.core.errors import IntegrityError, NotFound, UsageError
from ckx.runs import official
from ckx.runs.sysdesc import measurements_json, system_description
from ckx.runs.program_entry import load_program

MODEL = "resnet50"
DEFAULT_PROGRAM = "image-classification-onnx-cpu"
DEFAULT_VERSION = "v6.1"
SCENARIO_SETS = {
    "edge": ("SingleStream", "MultiStream", "Offline"),
    "datacenter": ("Server", "Offline"),
    "datacenter,edge": ("SingleStream", "MultiStream", "Server", "Offline"),
}
KEY_NAMES = {"SingleStream": "singlestream", "MultiStream": "multistream", "Server": "server", "Offline": "offline"}
# --short: options that keep every run to a few seconds (the tree then shows what a short run lacks)
# and that LoadGen still calls VALID (a count with no duration cap), so TEST01/TEST04 can verify them.
# SingleStream's score is LoadGen's early-stopping p90 estimate: over 64 queries that is the slowest query
# (one outlier decides it), over 256 it is about the 14th slowest, steady enough for TEST01/TEST04's 10%.
SHORT_OPS = {"SingleStream": "--time 1 --count 256", "MultiStream": "--time 1 --count 8",
             "Server": "--time 1 --count 16", "Offline": "--time 1 --count 64"}
LOG_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt")
SYSTEM_ID = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Run:
    """A run directory and its result.json."""

    path: Path
    result: dict
    order: str

    @property
    def scenario(self) -> str | None:
        return self.result.get("scenario")


@dataclass
class ScenarioRuns:
    """The runs one scenario of the tree is made of."""

    performance: Run | None = None
    accuracy: Run | None = None
    tests: dict[str, Run] = field(default_factory=dict)


def _read_run(path: Path, order: str | None = None) -> Run | None:
    try:
        result = json.loads((path / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict):
        return None
    stamp = order or str((result.get("run") or {}).get("started") or path.name)
    return Run(path, result, stamp)


def _newer(old: Run | None, new: Run) -> Run:
    return new if old is None or new.order >= old.order else old


def collect_runs(dirs: Sequence[Path]) -> dict[str, ScenarioRuns]:
    """Sort run directories into performance, accuracy and compliance runs per scenario (newest wins).

    A compliance run directory also gives the reference runs it made (``reference/``).
    """
    found: dict[str, ScenarioRuns] = {}
    for directory in dirs:
        run = _read_run(directory)
        if run is None or run.scenario not in KEY_NAMES:
            continue
        slot = found.setdefault(run.scenario, ScenarioRuns())
        compliance = run.result.get("compliance")
        if compliance:
            slot.tests[compliance["test"]] = _newer(slot.tests.get(compliance["test"]), run)
            for sub, role in (("reference/performance/run_1", "performance"), ("reference/accuracy", "accuracy")):
                ref = _read_run(directory / sub, run.order)
                if ref is not None:
                    setattr(slot, role, _newer(getattr(slot, role), ref))
        elif run.result.get("mode") == "accuracy":
            slot.accuracy = _newer(slot.accuracy, run)
        elif run.result.get("mode") == "performance" and not run.result.get("audit"):
            slot.performance = _newer(slot.performance, run)
    return found


def default_run_dirs(ctx: Context, program: str | None) -> list[Path]:
    """Every run directory under ``$CKX_HOME/runs`` (of one program if given), oldest first."""
    root = ctx.home.path / "runs"
    programs = [root / program] if program else sorted(p for p in root.glob("*") if p.is_dir())
    return [d for p in programs for d in sorted(p.glob("*")) if (d / "result.json").is_file()]


def _copy_logs(source: Path, target: Path, names: Sequence[str] = LOG_FILES) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        item = source / name
        if not item.is_file():
            raise NotFound(f"run {source} has no {name}")
        shutil.copy2(item, target / name)


def single_label_map(run: Run) -> Path:
    """The val map the official script can read for an accuracy run; CkxError if it has label sets."""
    dataset = run.result.get("dataset") or {}
    path = Path(dataset.get("single_label_list") or dataset.get("list") or "")
    if not path.is_file():
        raise NotFound(f"accuracy run {run.path}: its val map {path} is gone")
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if len(fields) >= 2 and not fields[-1].isdigit():
            raise IntegrityError(
                f"{path} line {number}: label {fields[-1]!r} is not one integer, and the official accuracy script "
                f"cannot read it; refusing to export the accuracy of {run.path}",
                hint="run accuracy on a dataset with a single-label val map (the embedded sample has one: "
                     "CK_CAFFE_IMAGENET_VAL_TXT_SINGLE_LABEL)")
    return path


def _ckx_line(run: Run) -> str | None:
    accuracy = run.result.get("accuracy") or {}
    single = accuracy.get("single_label") or {}
    if single.get("line"):
        return str(single["line"])
    if accuracy.get("total"):
        return f"accuracy={accuracy['top1']:.3f}%, good={accuracy['good']}, total={accuracy['total']}"
    return None


def export_accuracy(source: official.Source, run: Run, target: Path) -> str:
    """Copy an accuracy run; its accuracy.txt is the official script's line, which must equal ckx's."""
    _copy_logs(run.path, target, LOG_FILES + ("mlperf_log_accuracy.json",))
    val_map = single_label_map(run)
    line = official.official_accuracy(source, target / "mlperf_log_accuracy.json", val_map)
    ours = _ckx_line(run)
    if ours is not None and ours != line:
        raise IntegrityError(f"accuracy of {run.path}: the official script says {line!r}, ckx said {ours!r}",
                             hint="the run's val map and the one the official script read differ")
    (target / "accuracy.txt").write_text(line + "\n", encoding="utf-8")
    return line


def _command_of(run: Run) -> str:
    section = run.result.get("run") or {}
    if not section:
        return "(made by the compliance run of this scenario, as its reference run)"
    words = ["ckx", "run", f"program:{section.get('program')}", f"--cmd_key={section.get('cmd_key')}"]
    words += [f"--env.{k}={v!r}" if " " in str(v) else f"--env.{k}={v}" for k, v in sorted((section.get("env") or {}).items())]
    words += [f"--dep_add_tags.{k}={v}" for k, v in sorted((section.get("dep_add_tags") or {}).items())]
    if section.get("offline"):
        words.append("--offline")
    return " ".join(words)


def _readme(scenario: str, runs: ScenarioRuns, system_id: str) -> str:
    perf = runs.performance
    lines = [f"# {MODEL} {scenario} on {system_id}", "",
             "Made with ckx's MLPerf image-classification harness; each part below is a ckx run.", ""]
    for title, run in (("performance", perf), ("accuracy", runs.accuracy), *sorted(runs.tests.items())):
        if run is None:
            continue
        lines += [f"## {title}", "", f"run directory: `{run.path}`", "", "```", _command_of(run), "```", ""]
    if perf is not None:
        reasons = perf.result.get("invalid_reasons") or []
        rules = perf.result.get("mlperf_rules") or {}
        lines += ["## rules and validity", "", f"rules {rules.get('version')} (LoadGen {rules.get('loadgen_version')}, "
                  f"mlperf.conf sha1 {rules.get('conf_sha1')})", ""]
        lines += [f"- {reason}" for reason in reasons] or ["- valid for submission"]
        lines.append("")
    return "\n".join(lines)


def _user_conf(run: Run) -> str:
    texts = []
    for conf in run.result.get("user_confs") or ([run.result["user_conf"]] if run.result.get("user_conf") else []):
        try:
            texts.append(f"# from {conf}\n" + Path(conf).read_text(encoding="utf-8"))
        except OSError:
            raise NotFound(f"performance run {run.path}: its user.conf {conf} is gone") from None
    return "\n".join(texts) or "# no user.conf was in effect\n"


def _export_scenario(source: official.Source, scenario: str, runs: ScenarioRuns, target: Path,
                     measurements: dict[str, Any], system_id: str) -> dict[str, Any]:
    perf = runs.performance
    if perf is None:
        raise NotFound(f"no {scenario} performance run")
    _copy_logs(perf.path, target / "performance" / "run_1")
    row: dict[str, Any] = {"scenario": scenario, "metric": perf.result.get("metric"),
                           "valid": perf.result.get("valid"), "performance_run": str(perf.path)}
    if runs.accuracy is not None:
        row["accuracy"] = export_accuracy(source, runs.accuracy, target / "accuracy")
        row["accuracy_run"] = str(runs.accuracy.path)
    for test, run in sorted(runs.tests.items()):
        compliance = run.result["compliance"]
        produced = Path(compliance["output_dir"])
        if not produced.is_dir():
            raise NotFound(f"compliance run {run.path} has no verification output {produced}")
        shutil.copytree(produced, target / test)
        row[test] = "pass" if compliance.get("passed") else "fail"
        verified_against = Path(compliance.get("results_dir", "")).resolve()
        if verified_against != perf.path.parent.parent.resolve():
            row[f"{test}_note"] = f"verified against {verified_against}, not the exported performance run"
    (target / "measurements.json").write_text(json.dumps(measurements, indent=2, sort_keys=True) + "\n",
                                              encoding="utf-8")
    (target / "user.conf").write_text(_user_conf(perf), encoding="utf-8")
    (target / "README.md").write_text(_readme(scenario, runs, system_id), encoding="utf-8")
    return row


def _copy_sources(ctx: Context, runs: Mapping[str, ScenarioRuns], target: Path) -> None:
    """The code that ran: each program entry (and its base) under ``src/``."""

    names = {run.result.get("run", {}).get("program") for slot in runs.values()
             for run in (slot.performance, *slot.tests.values()) if run is not None}
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in sorted(n for n in names if n):
        program = load_program(ctx, f"program:{name}")
        for path in filter(None, (program.base_path, program.path)):
            if not (target / path.name).exists():
                shutil.copytree(path, target / path.name, ignore=ignore)


def _check_complete(runs: Mapping[str, ScenarioRuns], scenarios: Sequence[str], division: str) -> None:
    missing = []
    for scenario in scenarios:
        slot = runs.get(scenario) or ScenarioRuns()
        needed = {"performance": slot.performance, "accuracy": slot.accuracy}
        if division == "closed":
            needed.update({test: slot.tests.get(test) for test in ("TEST01", "TEST04")})
        missing += [f"{scenario} {role}" for role, run in needed.items() if run is None]
    if missing:
        raise NotFound("the runs lack " + ", ".join(missing),
                       hint="make them with 'ckx generate submission --run --out=DIR' (add --short for a quick tree), "
                            "or name the run directories with --run_dirs=a,b")


def build_tree(ctx: Context, runs: Mapping[str, ScenarioRuns], out: Path, *, scenarios: Sequence[str],
               division: str, user_system: Mapping[str, Any], user_measurements: Mapping[str, Any],
               system_type: str, force: bool) -> dict[str, Any]:
    """Write the submission tree for ``scenarios`` into ``out`` (staged, then truncated by the official tool)."""
    source = official.find_source(ctx)
    _check_complete(runs, scenarios, division)
    if out.exists():
        if not force:
            raise UsageError(f"{out} exists", hint="choose another --out, or add --force to replace it")
        shutil.rmtree(out)
    first = runs[scenarios[0]].performance
    if first is None:
        raise NotFound(f"no {scenarios[0]} performance run")
    system = system_description(ctx, first.result, user_system, division=division, system_type=system_type)
    submitter = str(system["submitter"] or "")
    if not submitter:
        raise UsageError("the submission needs a submitter: --system.submitter=ORG (or in @system.json)")
    system_id = SYSTEM_ID.sub("_", str(user_system.get("system_id") or system["system_name"])).strip("_")
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    root = staging / division / submitter
    (root / "systems").mkdir(parents=True)
    (root / "systems" / f"{system_id}.json").write_text(json.dumps(system, indent=2) + "\n", encoding="utf-8")
    _copy_sources(ctx, runs, root / "src")
    rows = []
    for scenario in scenarios:
        measurements = measurements_json((runs[scenario].performance or first).result, user_measurements)
        rows.append(_export_scenario(source, scenario, runs[scenario],
                                     root / "results" / system_id / MODEL / scenario, measurements, system_id))
    official.truncate_accuracy_logs(source, staging, out, submitter)
    full = out.parent / f"{out.name}.full-accuracy-logs"
    shutil.rmtree(full, ignore_errors=True)
    staging.rename(full)
    empty = sorted(k for k, v in system.items() if v in ("", None))
    return {"out": str(out), "full_logs": str(full), "system": system, "system_id": system_id, "rows": rows,
            "empty_system_fields": empty, "source": str(source.root)}
