"""Parameter sweeps: the ``--sweep.*`` spec, its combinations (cartesian product less exclusions), and the plan.

A sweep names parameters of ``ckx benchmark`` and their values: ``cmd_key``, ``env.VAR``,
``dep_add_tags.DEP`` and ``deps.DEP``. On the command line each value list is comma-separated
(``--sweep.env.MLPERF_THREADS=1,2``); in ``@sweep.yaml`` it may also be a YAML list, and ``sweep.exclude``
is a list of rules, each a mapping of parameters to a value (or a list of values) that together leave a
combination out. Nothing here runs anything: ``ckx.runs.sweep_run`` does.
"""
from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ckx.core.errors import UsageError
from ckx.runs.experiment import Experiment, Point, platform_summary
from ckx.store.entry import normalise_tags

SWEEPABLE_MAPS = ("env", "dep_add_tags", "deps")
SWEEP_HINT = ("usage: --sweep.cmd_key=a,b --sweep.env.VAR=1,2 --sweep.dep_add_tags.DEP=x,y --sweep.deps.DEP=UID1,UID2 "
              "(or @sweep.yaml with sweep: {env: {VAR: [1, 2]}, exclude: [{env.VAR: 1, cmd_key: a}]})")
MACHINE_KEYS = ("hostname", "cpu", "os", "machine")


@dataclass(frozen=True)
class Combination:
    """One point of a sweep: the swept parameters' values and the benchmark inputs they make."""

    index: int
    params: dict[str, str]  # "cmd_key" / "env.VAR" / ... -> value, in the sweep's order
    cmd_key: str
    env: dict[str, str]
    dep_add_tags: dict[str, str]
    deps: dict[str, str]
    extra_args: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.params.items())

    def choices(self, program: str, program_uid: str | None = None) -> dict[str, Any]:
        """The choices a run of this combination is recorded with, as far as they are known before it runs."""
        out: dict[str, Any] = {"program": program, "cmd_key": self.cmd_key, "env": dict(self.env),
                               "dep_add_tags": dict(self.dep_add_tags),
                               "deps": {name: {"env_uid": uid} for name, uid in self.deps.items()}}
        if program_uid:
            out["program_uid"] = program_uid
        if self.extra_args:
            out["extra_args"] = list(self.extra_args)
        return out

    def matches(self, point: Point, program: str, program_uid: str | None = None) -> bool:
        """Whether ``point`` was recorded with this combination's choices (the machine aside)."""
        chosen = point.choices
        if chosen.get("program") != program and not (program_uid and chosen.get("program_uid") == program_uid):
            return False
        if chosen.get("cmd_key") != self.cmd_key:
            return False
        if dict(chosen.get("env") or {}) != self.env or dict(chosen.get("dep_add_tags") or {}) != self.dep_add_tags:
            return False
        if list(chosen.get("extra_args") or []) != list(self.extra_args):
            return False
        recorded = chosen.get("deps") or {}
        for name, uid in self.deps.items():
            dep = recorded.get(name)
            if (dep.get("env_uid") if isinstance(dep, Mapping) else dep) != uid:
                return False
        return True


@dataclass(frozen=True)
class SweepSpec:
    """The swept parameters in order, each with its values, and the exclusion rules."""

    params: dict[str, list[str]]
    exclude: list[dict[str, list[str]]] = field(default_factory=list)


# -- parsing -------------------------------------------------------------------------------------
def _values(name: str, raw: Any) -> list[str]:
    if isinstance(raw, bool):
        raise UsageError(f"--sweep.{name} needs values: --sweep.{name}=A,B", hint=SWEEP_HINT)
    if isinstance(raw, (int, float)):
        items: list[Any] = [raw]
    elif isinstance(raw, str):
        items = raw.split(",")
    elif isinstance(raw, (list, tuple)):
        items = list(raw)
    else:
        raise UsageError(f"--sweep.{name} takes a comma-separated list or a list, not {raw!r:.80}", hint=SWEEP_HINT)
    values = []
    for item in items:
        if isinstance(item, (dict, list, tuple)) or item is None or isinstance(item, bool):
            raise UsageError(f"--sweep.{name}: {item!r:.60} is not a value", hint=SWEEP_HINT)
        if isinstance(item, float) and item.is_integer():
            item = int(item)  # YAML 8.0 and 8 are the same thread count
        text = str(item).strip()
        if text:
            values.append(text)
    if not values:
        raise UsageError(f"--sweep.{name} has no values", hint=SWEEP_HINT)
    if len(set(values)) != len(values):
        raise UsageError(f"--sweep.{name} lists a value twice: {','.join(values)}")
    return values


def _flatten_params(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``{"env": {"X": v}, "cmd_key": v}`` or ``{"env.X": v}`` as ``{"env.X": v, "cmd_key": v}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        head, dot, tail = key.partition(".")
        if head in SWEEPABLE_MAPS and not dot:
            if not isinstance(value, Mapping) or not value:
                raise UsageError(f"{where}.{key} needs names: {where}.{key}.NAME=VALUES", hint=SWEEP_HINT)
            for name, item in value.items():
                out[f"{key}.{name}"] = item
        elif head in SWEEPABLE_MAPS and tail:
            out[key] = value
        elif key == "cmd_key":
            out[key] = value
        else:
            raise UsageError(f"{where}.{key}: only cmd_key, env.VAR, dep_add_tags.DEP and deps.DEP can be swept",
                             hint=SWEEP_HINT)
    return out


def parse_sweep(raw: Mapping[str, Any]) -> SweepSpec:
    """The SweepSpec of a ``sweep`` input; UsageError naming the parameter for anything malformed."""
    if not isinstance(raw, Mapping):
        raise UsageError("--sweep takes parameters: --sweep.NAME=VALUES", hint=SWEEP_HINT)
    data = dict(raw)
    rules = data.pop("exclude", None) or []
    flat = _flatten_params(data, "--sweep")
    if not flat:
        raise UsageError("--sweep names no parameter", hint=SWEEP_HINT)
    params = {name: _values(name, value) for name, value in flat.items()}
    if isinstance(rules, Mapping):
        rules = [rules]
    if not isinstance(rules, list):
        raise UsageError("sweep.exclude must be a list of rules (mappings of parameters to values)", hint=SWEEP_HINT)
    exclude = []
    for number, rule in enumerate(rules, start=1):
        if not isinstance(rule, Mapping) or not rule:
            raise UsageError(f"sweep.exclude rule {number} must be a mapping of parameters to values, not {rule!r:.60}",
                             hint=SWEEP_HINT)
        parsed = {}
        for name, value in _flatten_params(rule, f"sweep.exclude[{number}]").items():
            if name not in params:
                raise UsageError(f"sweep.exclude rule {number} names {name}, which the sweep does not vary",
                                 hint=f"swept parameters: {', '.join(params)}")
            parsed[name] = _values(f"exclude.{name}", value)
        exclude.append(parsed)
    return SweepSpec(params, exclude)


def _excluded(values: Mapping[str, str], rules: Sequence[Mapping[str, list[str]]]) -> bool:
    return any(all(values[name] in allowed for name, allowed in rule.items()) for rule in rules)


def combinations(spec: SweepSpec, *, cmd_key: str | None, env: Mapping[str, str], dep_add_tags: Mapping[str, str],
                 deps: Mapping[str, str], extra_args: Sequence[str] = ()) -> list[Combination]:
    """The cartesian product of the spec's values over the fixed inputs, in order, less the excluded ones."""
    names = list(spec.params)
    out: list[Combination] = []
    for values in itertools.product(*(spec.params[n] for n in names)):
        chosen = dict(zip(names, values))
        if _excluded(chosen, spec.exclude):
            continue
        run_env = {str(k): str(v) for k, v in env.items()}
        tags = {str(k): ",".join(normalise_tags(v)) for k, v in dep_add_tags.items()}
        forced = {str(k): str(v) for k, v in deps.items()}
        key = cmd_key
        for name, value in chosen.items():
            head, _, tail = name.partition(".")
            if head == "cmd_key":
                key = value
            elif head == "env":
                run_env[tail] = value
            elif head == "dep_add_tags":
                tags[tail] = ",".join(normalise_tags(value))
            else:
                forced[tail] = value
        if not key:
            raise UsageError("a sweep needs a command key: --cmd_key=KEY or --sweep.cmd_key=A,B")
        out.append(Combination(len(out) + 1, chosen, key, dict(sorted(run_env.items())), dict(sorted(tags.items())),
                               dict(sorted(forced.items())), tuple(str(a) for a in extra_args)))
    if not out:
        raise UsageError("sweep.exclude leaves no combination to run", hint="loosen the exclude rules")
    return out


# -- what is recorded already --------------------------------------------------------------------
def same_machine(point: Point, machine: Mapping[str, Any] | None) -> bool:
    """Whether ``point`` ran on ``machine`` (a platform summary); None means any machine (a cluster)."""
    if machine is None:
        return True
    summary = point.platform
    return all(summary.get(k) == machine.get(k) for k in MACHINE_KEYS)


@dataclass(frozen=True)
class Status:
    """Where one combination stands: done (a recorded point), failed (a failed record), or to run."""

    combination: Combination
    state: str  # "done", "failed" or "todo"
    point: Point | None = None
    failed_point: Point | None = None


def statuses(combos: Sequence[Combination], experiment: Experiment | None, *, program: str,
             program_uid: str | None, machine: Mapping[str, Any] | None) -> list[Status]:
    """Each combination's state against ``experiment``'s points on ``machine`` (None: on any machine)."""
    points = list(experiment.points) if experiment else []
    out = []
    for combo in combos:
        mine = [p for p in points if same_machine(p, machine) and combo.matches(p, program, program_uid)]
        ok = next((p for p in mine if not p.failed and p.repetitions), None)
        failed = next((p for p in mine if p.failed), None)
        state = "done" if ok else ("failed" if failed else "todo")
        out.append(Status(combo, state, ok, failed))
    return out


def expected_seconds(items: Sequence[Status], repetitions: int) -> tuple[float | None, int]:
    """The expected run time of one combination, from the recorded ones' repetition durations.

    Returns (seconds or None when nothing of the sweep is recorded yet, how many points the figure rests on).
    """
    per_rep = []
    for item in items:
        if item.point is None:
            continue
        durations = [r.get("duration_s") for r in item.point.repetitions]
        durations = [float(d) for d in durations if isinstance(d, (int, float)) and not isinstance(d, bool)]
        if durations:
            per_rep.append(statistics.fmean(durations))
    if not per_rep:
        return None, 0
    return statistics.median(per_rep) * repetitions, len(per_rep)


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 60:
        return f"{math.ceil(seconds)} s"
    minutes, secs = divmod(int(math.ceil(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def machine_of(features: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a platform summary that decide whether two points ran on the same machine."""
    summary = platform_summary(features)
    return {k: summary.get(k) for k in MACHINE_KEYS}


__all__ = ["Combination", "Status", "SweepSpec", "combinations", "duration_text", "expected_seconds", "machine_of",
           "parse_sweep", "same_machine", "statuses"]
