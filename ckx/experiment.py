"""Experiments: benchmark a program N times, record points with statistics, show, replay and export them."""
from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import logging
import math
import re
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .cid import Cid, check_name, is_uid, new_uid
from .context import Context
from .errors import Ambiguous, MetaError, NotFound, ProgramFailed, UsageError
from .inputs import as_bool, as_int
from .index import EntryRecord, Query
from .jsonio import read_json, write_json_atomic, write_text_atomic
from .repo import Repo

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MODULE = "experiment"
POINTS_DIR = "points"
# Characteristics that describe the inputs of a run rather than its outcome: left out of statistics.
SETTINGS_PREFIXES = ("schema_version", "loadgen.", "rules.", "requested_settings.")
DURATION_KEY = "run.duration_s"
METRIC_KEY = "metric.value"
CK_POINT_RE = re.compile(r"^ckp-(?P<point>[^.]+)\.(?P<sub>\d{4})\.json$")


# -- statistics ----------------------------------------------------------------------------------
def compute_statistics(values: Sequence[float]) -> dict[str, Any]:
    """min, max, mean, median, sample stdev (0 for one value), range % of the mean, n and the values.

    ``range_pct`` is 100 * (max - min) / |mean| (None when the mean is 0). Raises ValueError on no values.
    """
    numbers = [float(v) for v in values]
    if not numbers:
        raise ValueError("no values")
    mean = statistics.fmean(numbers)
    low, high = min(numbers), max(numbers)
    return {
        "n": len(numbers),
        "min": low,
        "max": high,
        "mean": mean,
        "median": statistics.median(numbers),
        "stdev": statistics.stdev(numbers) if len(numbers) > 1 else 0.0,
        "range_pct": 100.0 * (high - low) / abs(mean) if mean else None,
        "values": numbers,
    }


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Scalar leaves of nested dicts as ``{"a.b.c": value}``; lists become comma-joined text."""
    out: dict[str, Any] = {}
    if isinstance(data, Mapping):
        for key in sorted(data, key=str):
            out.update(flatten(data[key], f"{prefix}{key}."))
    elif isinstance(data, (list, tuple)):
        if all(not isinstance(item, (dict, list, tuple)) for item in data):
            out[prefix[:-1]] = ",".join("" if item is None else str(item) for item in data)
    elif prefix:
        out[prefix[:-1]] = data
    return out


def numeric_characteristics(characteristics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers among a repetition's flattened characteristics, without run settings."""
    out: dict[str, float] = {}
    for key, value in flatten(characteristics).items():
        if key.startswith(SETTINGS_PREFIXES) or key in SETTINGS_PREFIXES:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


def point_statistics(repetitions: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Statistics per flattened numeric key over the repetitions that have it (plus the run duration)."""
    columns: dict[str, list[float]] = {}
    for rep in repetitions:
        values = numeric_characteristics(rep.get("characteristics") or {})
        duration = rep.get("duration_s")
        if isinstance(duration, (int, float)) and not isinstance(duration, bool):
            values[DURATION_KEY] = float(duration)
        for key, value in values.items():
            columns.setdefault(key, []).append(value)
    return {key: compute_statistics(values) for key, values in sorted(columns.items())}


# -- platform ------------------------------------------------------------------------------------
def platform_features(ctx: Context) -> dict[str, Any]:
    """This machine's description as a plain dict (from ckx.platform)."""
    from .platform import current_platform

    info = current_platform(ctx)
    return _plain(info)


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return _plain(value.to_dict())
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return _plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


_SUMMARY_PATHS = {
    "hostname": ("hostname", "host.name", "host.hostname", "node", "system.hostname", "os.hostname"),
    "cpu": ("cpu.model", "cpu.model_name", "cpu.name", "cpu.brand", "cpu_model", "processor", "cpu.vendor_model"),
    "cores": ("cpu.logical_cores", "cpu.count", "cpu.cores", "cpu.logical", "cpu_count", "cpu.physical_cores"),
    "os": ("os.name", "os.pretty_name", "os.description", "os.system", "os", "system"),
    "machine": ("machine", "cpu.arch", "os.machine", "arch", "cpu.architecture"),
}


def platform_summary(features: Mapping[str, Any]) -> dict[str, Any]:
    """hostname, cpu, cores, os and machine picked from a platform description (None where absent)."""
    flat = flatten(features)
    summary: dict[str, Any] = {}
    for name, paths in _SUMMARY_PATHS.items():
        summary[name] = next((flat[p] for p in paths if flat.get(p) not in (None, "")), None)
    return summary


def machine_label(summary: Mapping[str, Any]) -> str:
    """"host (cpu)" for tables and legends."""
    host = summary.get("hostname") or "unknown host"
    cpu = summary.get("cpu")
    return f"{host} ({cpu})" if cpu else str(host)


# -- points --------------------------------------------------------------------------------------
def point_key(choices: Mapping[str, Any], features: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two runs the same point: program, command key, env, dep tags, dependency versions, machine.

    Env uids are left out (a reinstall of the same version is the same choice), and so is the way deps were
    found (offline or not): the dependency versions already say what was used.
    """
    deps = {}
    for name, dep in sorted((choices.get("deps") or {}).items()):
        dep = dep if isinstance(dep, Mapping) else {"env_uid": dep}
        deps[name] = {k: dep.get(k) for k in ("soft", "version", "package")}
    summary = platform_summary(features)
    return {
        "program": choices.get("program"),
        "cmd_key": choices.get("cmd_key"),
        "env": dict(sorted((choices.get("env") or {}).items())),
        "dep_add_tags": dict(sorted((choices.get("dep_add_tags") or {}).items())),
        "extra_args": list(choices.get("extra_args") or []),
        "deps": deps,
        "platform": {k: summary.get(k) for k in ("hostname", "cpu", "os", "machine")},
    }


def point_uid(choices: Mapping[str, Any], features: Mapping[str, Any]) -> str:
    """A stable 16-hex uid: the sha256 of the canonical JSON of ``point_key``."""
    canonical = json.dumps(point_key(choices, features), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Point:
    """One recorded point: its choices, the machine, every repetition and the statistics over them."""

    uid: str
    choices: dict
    features: dict
    repetitions: tuple[dict, ...]
    statistics: dict
    metric: dict
    tags: tuple[str, ...] = ()
    path: Path | None = None

    @property
    def platform(self) -> dict[str, Any]:
        return platform_summary(self.features)

    def metric_stats(self) -> dict[str, Any] | None:
        """Statistics of the headline metric (``metric.value``), or None."""
        return self.statistics.get(METRIC_KEY)

    def to_dict(self) -> dict[str, Any]:
        """The on-disk form (points/<uid>.json)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "uid": self.uid,
            "choices": self.choices,
            "features": self.features,
            "repetitions": list(self.repetitions),
            "statistics": self.statistics,
            "metric": self.metric,
            "tags": list(self.tags),
        }


@dataclass(frozen=True)
class Experiment:
    """A loaded experiment entry: its meta and points (migrated in memory when stored in an older format)."""

    path: Path
    meta: dict
    points: tuple[Point, ...]
    record: EntryRecord | None = None
    migrated_from: int | None = None

    @property
    def uid(self) -> str | None:
        return self.meta.get("uid") or (self.record.uid if self.record else None)

    @property
    def alias(self) -> str | None:
        return self.meta.get("alias") if "alias" in self.meta else (self.record.alias if self.record else None)

    @property
    def name(self) -> str:
        return self.alias or self.uid or self.path.name

    @property
    def cid(self) -> str:
        return self.record.cid if self.record else f"{MODULE}:{self.name}"

    @property
    def tags(self) -> list[str]:
        return list(self.meta.get("tags") or [])

    def point(self, uid: str) -> Point:
        """The point whose uid is or starts with ``uid``; NotFound / Ambiguous otherwise."""
        matches = [p for p in self.points if p.uid == uid] or [p for p in self.points if p.uid.startswith(uid)]
        if not matches:
            raise NotFound(f"{self.cid} has no point {uid!r}",
                           hint=f"'ckx show {self.cid}' lists its points")
        if len(matches) > 1:
            raise Ambiguous(f"point {uid!r} of {self.cid} is ambiguous", [p.uid for p in matches])
        return matches[0]


@dataclass(frozen=True)
class Repetition:
    """One run to record: its parsed result, where it ran, and the files to keep a copy of."""

    characteristics: dict
    run_dir: str | None = None
    started: str | None = None
    duration_s: float | None = None
    files: tuple[tuple[str, Path], ...] = ()  # (name to keep it under, source path)


@dataclass(frozen=True)
class RecordOutcome:
    """What recording added: the experiment, the point, the repetition numbers written, and if it is new."""

    experiment: Experiment
    point: Point
    added: tuple[int, ...]
    created_experiment: bool
    created_point: bool


# -- reading and migrating -----------------------------------------------------------------------
def _check_version(version: Any, source: Path) -> int:
    if version is None:
        return 0
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise MetaError(f"{source}: field 'schema_version': expected a non-negative integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise MetaError(
            f"{source}: experiment schema_version {version} is newer than this ckx supports ({SCHEMA_VERSION})",
            hint="upgrade ckx to read this experiment",
        )
    return version


def _point_from_dict(data: Mapping[str, Any], path: Path) -> Point:
    _check_version(data.get("schema_version", SCHEMA_VERSION), path)
    uid = data.get("uid") or path.stem
    reps = data.get("repetitions")
    if not isinstance(reps, list):
        raise MetaError(f"{path}: field 'repetitions': expected a list")
    stats = data.get("statistics")
    if not isinstance(stats, dict):
        stats = point_statistics(reps)
    return Point(uid=str(uid), choices=dict(data.get("choices") or {}), features=dict(data.get("features") or {}),
                 repetitions=tuple(reps), statistics=stats, metric=dict(data.get("metric") or {}),
                 tags=tuple(data.get("tags") or ()), path=path)


def read_experiment(entry_dir: Path, meta_path: Path, record: EntryRecord | None = None) -> Experiment:
    """Load an experiment from disk. Older layouts are migrated in memory; newer ones raise MetaError (exit 1)."""
    from .jsonio import read_meta_file

    meta = read_meta_file(meta_path)
    raw_version = meta.get("schema_version")
    has_points_dir = (entry_dir / POINTS_DIR).is_dir()
    if raw_version is None and has_points_dir:
        version = SCHEMA_VERSION  # a points/ directory is the current layout even without the field
    else:
        version = _check_version(raw_version, meta_path)
    if version == 0:
        meta, points = migrate_v0(entry_dir, meta, record)
        return Experiment(entry_dir, meta, tuple(points), record, migrated_from=0)
    points = []
    points_dir = entry_dir / POINTS_DIR
    if points_dir.is_dir():
        for path in sorted(points_dir.glob("*.json")):
            data = read_json(path)
            if not isinstance(data, dict):
                raise MetaError(f"{path}: the top level must be an object")
            points.append(_point_from_dict(data, path))
    order = {item.get("uid"): i for i, item in enumerate(meta.get("points") or []) if isinstance(item, dict)}
    points.sort(key=lambda p: (order.get(p.uid, len(order)), p.uid))
    return Experiment(entry_dir, meta, tuple(points), record)


def _ck_characteristics_list(data: Any) -> list[dict]:
    if isinstance(data, list):
        return [item.get("characteristics", item) if isinstance(item, dict) else {} for item in data]
    if isinstance(data, dict):
        if isinstance(data.get("characteristics_list"), list):
            return [c for c in data["characteristics_list"] if isinstance(c, dict)]
        if isinstance(data.get("characteristics"), dict):
            return [data["characteristics"]]
    return []


def migrate_v0(entry_dir: Path, meta: Mapping[str, Any], record: EntryRecord | None = None) -> tuple[dict, list[Point]]:
    """Turn a CK-style experiment (``ckp-<point>.NNNN.json`` files, schema_version 0) into the current form.

    Each ``ckp-<point>.NNNN.json`` holds either a list of characteristics (one per repetition) or a dict with
    ``characteristics_list``/``characteristics``, ``choices`` and ``features``; the sub-point files of one point
    become its repetitions in order. ``pipeline.json`` (CK's whole input) fills the choices a point lacks.
    """
    pipeline: dict = {}
    if (entry_dir / "pipeline.json").is_file():
        loaded = read_json(entry_dir / "pipeline.json")
        pipeline = loaded if isinstance(loaded, dict) else {}
    grouped: dict[str, list[Path]] = {}
    for path in sorted(entry_dir.glob("ckp-*.json")):
        match = CK_POINT_RE.match(path.name)
        if match:
            grouped.setdefault(match.group("point"), []).append(path)
    points: list[Point] = []
    for ck_point, paths in sorted(grouped.items()):
        reps: list[dict] = []
        choices: dict = {}
        features: dict = {}
        for path in paths:
            data = read_json(path)
            if isinstance(data, dict):
                choices = choices or dict(data.get("choices") or {})
                features = features or dict(data.get("features") or {})
            for chars in _ck_characteristics_list(data):
                reps.append({"characteristics": chars, "run_dir": None, "started": None, "duration_s": None,
                             "source": path.name})
        choices = _ck_choices(choices, pipeline)
        if isinstance(features.get("platform"), dict):  # CK kept the machine under features.platform
            features = dict(features["platform"])
        uid = ck_point if is_uid(ck_point) else hashlib.sha256(ck_point.encode()).hexdigest()[:16]
        metric = _metric_info(reps)
        points.append(Point(uid=uid, choices=choices, features=features, repetitions=tuple(reps),
                            statistics=point_statistics(reps), metric=metric,
                            path=entry_dir / POINTS_DIR / f"{uid}.json"))
    uid = meta.get("uid") or (record.uid if record else None) or new_uid()
    alias = record.alias if record else meta.get("alias", entry_dir.name if not is_uid(entry_dir.name) else None)
    new_meta = {
        "uid": uid,
        "alias": alias,
        "tags": [str(t) for t in (meta.get("tags") or [])],
        "schema_version": SCHEMA_VERSION,
        "name": meta.get("name") or meta.get("data_name") or alias or uid,
        "migrated_from": 0,
    }
    new_meta["points"] = [_point_summary(p) for p in points]
    return new_meta, points


def _ck_choices(choices: Mapping[str, Any], pipeline: Mapping[str, Any]) -> dict:
    """Normalise CK's choices (cmd_key, env, deps as env uids or dicts) to ckx's shape."""
    out = dict(choices)
    for key in ("cmd_key", "program", "env", "dep_add_tags"):
        if key not in out and key in pipeline:
            out[key] = pipeline[key]
    if "program" not in out and pipeline.get("data_uoa"):
        out["program"] = pipeline["data_uoa"]
    env = out.get("env")
    out["env"] = {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {}
    deps = out.get("deps")
    norm = {}
    if isinstance(deps, dict):
        for name, dep in deps.items():
            if isinstance(dep, dict):
                norm[name] = {"env_uid": dep.get("env_uid") or dep.get("uoa"),
                              "soft": dep.get("soft") or dep.get("soft_uoa"),
                              "version": dep.get("version") or dep.get("ver"), "tags": dep.get("tags"),
                              "package": dep.get("package") or dep.get("package_uoa")}
            else:
                norm[name] = {"env_uid": str(dep), "soft": None, "version": None, "tags": None, "package": None}
    out["deps"] = norm
    return out


def _metric_info(reps: Sequence[Mapping[str, Any]]) -> dict:
    """The headline metric's name and unit, the run's scenario and mode (and MLPerf rules), from the first repetition."""
    for rep in reps:
        chars = rep.get("characteristics") or {}
        metric = chars.get("metric")
        if isinstance(metric, dict):
            info = {"name": metric.get("name"), "unit": metric.get("unit"),
                    "scenario": chars.get("scenario"), "mode": chars.get("mode")}
            if isinstance(chars.get("mlperf_rules"), dict):  # the MLPerf rules the metric is stated under
                info["mlperf_rules"] = chars["mlperf_rules"]
            return info
    return {}


def _point_summary(point: Point) -> dict:
    stats = point.metric_stats() or {}
    return {
        "uid": point.uid,
        "program": point.choices.get("program"),
        "cmd_key": point.choices.get("cmd_key"),
        "hostname": point.platform.get("hostname"),
        "repetitions": len(point.repetitions),
        "metric": point.metric.get("name"),
        "median": stats.get("median"),
    }


def request_cids(inp: Mapping[str, Any]) -> list[Cid]:
    """The experiments a request names: its positional CIDs, else its module/entry/repo; none means all."""
    texts = [str(c) for c in inp.get("cids") or []]
    if texts:
        return [Cid.parse(t) for t in texts]
    module = inp.get("module") or MODULE
    return [Cid(module=module, entry=inp.get("entry"), repo=inp.get("repo"))]


def experiment_records(ctx: Context, cids: Sequence[str | Cid] = (), *, tags: Any = None) -> list[EntryRecord]:
    """Experiment entries named by ``cids`` (wildcards allowed), or all of them; filtered by ``tags``.

    Raises UsageError for a CID of another module, NotFound for a name that matches nothing.
    """
    from .generic import find_entries

    records: list[EntryRecord] = []
    seen: set[tuple[str, str]] = set()
    for item in cids or [Cid(MODULE)]:
        cid = Cid.parse(item) if isinstance(item, str) else item
        if cid.module != MODULE:
            raise UsageError(f"'{cid}' is not an experiment", hint="name experiments as experiment:NAME")
        found = find_entries(ctx, cid, tags=tags)
        if not found and cid.entry:
            raise NotFound(f"no entry {cid}", hint="'ckx list experiment' shows the experiments")
        for record in found:
            key = (record.repo, str(record.path))
            if key not in seen:
                seen.add(key)
                records.append(record)
    return records


def load_experiment(ctx: Context, cid: str | Cid) -> Experiment:
    """The one experiment ``cid`` names (NotFound / Ambiguous otherwise), migrated if old."""
    from .generic import resolve_entry

    parsed = Cid.parse(cid) if isinstance(cid, str) else cid
    if parsed.module != MODULE:
        raise UsageError(f"'{parsed}' is not an experiment", hint="name one as experiment:NAME")
    record = resolve_entry(ctx, parsed)
    return read_experiment(record.path, record.meta_path, record)


# -- recording -----------------------------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _lock(ctx: Context, repo: Repo, name: str):
    from filelock import FileLock

    ctx.home.ensure()
    digest = hashlib.sha256(f"{repo.path}\0{name}".encode()).hexdigest()[:16]
    return FileLock(str(ctx.home.locks / f"experiment-{digest}.lock"), timeout=600)


def record_point(
    ctx: Context,
    *,
    name: str,
    choices: Mapping[str, Any],
    features: Mapping[str, Any],
    repetitions: Sequence[Repetition],
    repo: str | None = None,
    tags: Sequence[str] = (),
) -> RecordOutcome:
    """Add ``repetitions`` of one point to experiment ``name`` in ``repo`` (default: local), creating either.

    The point's uid is ``point_uid(choices, features)``: the same choices on the same machine add repetitions to
    the same point; nothing is ever overwritten. Files named in each repetition are copied under
    ``points/<uid>/files/<repetition>/``. Holds a per-experiment file lock, so concurrent recorders are safe.
    Raises UsageError for a bad name or a read-only repo, MetaError for an unreadable or newer experiment.
    """
    from .entry import normalise_tags
    from .generic import _target_repo, write_new_entry

    check_name(name, "experiment name")
    target = _target_repo(ctx, repo)
    tags = normalise_tags(list(tags))
    uid_name = is_uid(name)
    with _lock(ctx, target, name):
        entry_dir = target.module_dir(MODULE) / name
        created = False
        if not (entry_dir / "meta.json").is_file():
            meta = {"uid": name if uid_name else new_uid(), "alias": None if uid_name else name, "tags": tags,
                    "schema_version": SCHEMA_VERSION, "name": name, "created": _now(), "points": []}
            write_new_entry(ctx, target, MODULE, meta["alias"], meta["uid"], meta)
            created = True
        experiment = read_experiment(entry_dir, entry_dir / "meta.json")
        meta = dict(experiment.meta)
        existing = {p.uid: p for p in experiment.points}
        if experiment.migrated_from is not None:
            ctx.info(f"migrating {entry_dir} from schema_version {experiment.migrated_from} to {SCHEMA_VERSION}")
            for point in experiment.points:
                write_json_atomic(entry_dir / POINTS_DIR / f"{point.uid}.json", point.to_dict())

        uid = point_uid(choices, features)
        old = existing.get(uid)
        reps = list(old.repetitions) if old else []
        added = []
        for rep in repetitions:
            number = len(reps) + 1
            kept = []
            for kept_name, source in rep.files:
                dest = entry_dir / POINTS_DIR / uid / "files" / str(number) / kept_name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest)
                kept.append(kept_name)
            reps.append({"characteristics": rep.characteristics, "run_dir": rep.run_dir, "started": rep.started,
                         "duration_s": rep.duration_s, "files": kept})
            added.append(number)
        point_tags = list(dict.fromkeys(list(old.tags if old else ()) + tags))
        point = Point(uid=uid, choices=dict(old.choices) if old else _plain(dict(choices)),
                      features=dict(old.features) if old else _plain(dict(features)), repetitions=tuple(reps),
                      statistics=point_statistics(reps), metric=_metric_info(reps), tags=tuple(point_tags),
                      path=entry_dir / POINTS_DIR / f"{uid}.json")
        write_json_atomic(point.path, point.to_dict())

        points = [point if p.uid == uid else p for p in experiment.points]
        if old is None:
            points.append(point)
        meta["tags"] = list(dict.fromkeys(list(meta.get("tags") or []) + tags))
        meta["points"] = [_point_summary(p) for p in points]
        meta["schema_version"] = SCHEMA_VERSION
        meta["updated"] = _now()
        meta.pop("migrated_from", None)
        from .entry import validate_meta

        validate_meta(meta, MODULE, entry_dir / "meta.json")
        write_json_atomic(entry_dir / "meta.json", meta)
    ctx.index.refresh([MODULE], force=True)
    final = Experiment(entry_dir, meta, tuple(points))
    return RecordOutcome(final, point, tuple(added), created, old is None)


# -- formatting ----------------------------------------------------------------------------------
def fmt(value: Any) -> str:
    """A number for humans: 1234.5, 12.346, 0.001235; other values as text."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.3f}"
    return f"{value:.4g}"


def metric_text(point: Point) -> str:
    """"median ± stdev unit" of the point's headline metric, or "-"."""
    stats = point.metric_stats()
    if not stats:
        return "-"
    unit = point.metric.get("unit") or ""
    return f"{fmt(stats['median'])} ± {fmt(stats['stdev'])} {unit}".rstrip()


def env_text(choices: Mapping[str, Any], limit: int = 60) -> str:
    """The env choices as ``K=V`` joined by spaces, shortened to ``limit`` characters."""
    env = choices.get("env") or {}
    text = " ".join(f"{k}={v}" for k, v in sorted(env.items()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- input coercion ------------------------------------------------------------------------------
def as_list(value: Any) -> list[str]:
    """A comma-separated string or a list as a list of non-empty strings."""
    if value is None or value is False or value is True:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(i).strip() for i in items if str(i).strip()]


def as_str_dict(value: Any, name: str) -> dict[str, str]:
    """``--name.KEY=VALUE`` options as a dict of strings; UsageError for a bare ``--name=x``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"--{name} takes keys: --{name}.KEY=VALUE")
    return {str(k): "" if v is True else str(v) for k, v in value.items()}


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


HEADLINE_KEYS = (METRIC_KEY, "samples_per_second", "completed_qps", "latency_ms.p50", "latency_ms.p90",
                 "latency_ms.p99", "accuracy.top1", DURATION_KEY)


def stats_table(stats: Mapping[str, Mapping[str, Any]], keys: Sequence[str] | None = None) -> dict:
    """A table (columns/rows) of statistics for ``keys`` (default: the headline keys present)."""
    keys = [k for k in (keys or HEADLINE_KEYS) if k in stats]
    rows = [[k, stats[k]["n"], fmt(stats[k]["min"]), fmt(stats[k]["max"]), fmt(stats[k]["mean"]),
             fmt(stats[k]["median"]), fmt(stats[k]["stdev"]), fmt(stats[k]["range_pct"])] for k in keys]
    return {"columns": ["characteristic", "n", "min", "max", "mean", "median", "stdev", "range %"], "rows": rows}


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
    from .program import run_program

    choices: dict = {}
    done: list[Repetition] = []
    for number in range(1, repetitions + 1):
        ctx.info(f"--- {program} --cmd_key={cmd_key}: repetition {number}/{repetitions}")
        started = _now()
        try:
            result = run_program(ctx, program, cmd_key=cmd_key, env=dict(env), dep_add_tags=dict(dep_add_tags),
                                 deps=dict(deps), offline=offline, print_files=list(print_files),
                                 extra_args=list(extra_args), stream=not ctx.quiet, timeout_s=timeout_s)
        except ProgramFailed as exc:
            return choices, done, exc
        run_choices = _plain(dict(result.choices or {}))
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


def _timeout(inp: Mapping[str, Any]) -> float | None:
    value = inp.get("timeout")
    if value in (None, True):
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise UsageError(f"--timeout takes seconds, not {value!r}") from None
    if seconds <= 0:
        raise UsageError(f"--timeout must be positive, not {value!r}")
    return seconds


def action_benchmark(ctx: Context, inp: dict) -> dict:
    """``ckx benchmark program:NAME --cmd_key=KEY [--repetitions=N] [--record ...]``: run N times, show statistics.

    With ``--record`` the repetitions are added to experiment ``--record_uoa`` (default: the program's name) in
    ``--record_repo`` (default: local). A failing repetition stops the run (exit 6); with ``--record`` the
    repetitions before it are still recorded.
    """
    from .fetch import offline_from_env

    program = _program_cid(inp)
    cmd_key = inp.get("cmd_key")
    if not cmd_key or not isinstance(cmd_key, str):
        raise UsageError("'benchmark' needs --cmd_key=KEY", hint="'ckx load program:NAME' lists its run_cmds")
    repetitions = as_int(inp.get("repetitions"), "repetitions", 1)
    record = as_bool(inp.get("record"), "record")
    record_uoa = inp.get("record_uoa")
    if record_uoa is not None and not isinstance(record_uoa, str):
        raise UsageError("--record_uoa takes a name")
    if record_uoa:
        check_name(record_uoa, "experiment name")
    if record and inp.get("record_repo"):
        target_repo = ctx.registry.get(str(inp["record_repo"]))
        if not target_repo.writable:
            raise UsageError(f"repo {target_repo.name!r} is in CK's format and cannot be written",
                             hint="record into a native repo: --record_repo=local, or one made with "
                                  "'ckx add repo:NAME'")
    if not record and (record_uoa or inp.get("record_repo")):
        ctx.warn("--record_uoa and --record_repo have no effect without --record: nothing will be recorded")
    timers = not as_bool(inp.get("skip_print_timers"), "skip_print_timers")
    show_stats = not as_bool(inp.get("skip_print_stats"), "skip_print_stats")
    print_files = as_list(inp.get("print_files"))
    tags = as_list(inp.get("tags"))
    choices, reps, failure = run_repetitions(
        ctx, program, cmd_key=cmd_key, repetitions=repetitions, env=as_str_dict(inp.get("env"), "env"),
        dep_add_tags=as_str_dict(inp.get("dep_add_tags"), "dep_add_tags"), deps=as_str_dict(inp.get("deps"), "deps"),
        offline=as_bool(inp.get("offline"), "offline") or offline_from_env(), print_files=print_files,
        extra_args=[str(a) for a in inp.get("rest") or []], timers=timers, timeout_s=_timeout(inp),
    )
    stats = point_statistics([{"characteristics": r.characteristics, "duration_s": r.duration_s} for r in reps])
    result: dict[str, Any] = {"return": 0, "program": program, "cmd_key": cmd_key, "choices": choices,
                              "repetitions": [_rep_dict(r) for r in reps], "statistics": stats}
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
    if show_stats and stats:
        from .cli.render import table

        spec = stats_table(stats)
        if spec["rows"]:
            lines.insert(0, table(spec["columns"], spec["rows"]))
    result["text"] = "\n".join(lines)
    return result


def _rep_dict(rep: Repetition) -> dict:
    return {"characteristics": rep.characteristics, "run_dir": rep.run_dir, "started": rep.started,
            "duration_s": rep.duration_s, "files": [name for name, _ in rep.files]}


def _cid_of(ctx: Context, experiment: Experiment) -> str:
    for record in ctx.index.query(Query(module=MODULE, name=experiment.uid)):
        if record.path == experiment.path:
            return record.cid
    return f"{MODULE}:{experiment.name}"


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
    from .cli.render import table

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


# -- replay --------------------------------------------------------------------------------------
def _env_exists(ctx: Context, uid: str) -> bool:
    from .envs import load_env

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
    dependency env that still exists, and says which recorded versions are not available now.
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
    repetitions = as_int(inp.get("repetitions"), "repetitions", 1)
    extra = [str(a) for a in recorded.get("extra_args") or []] + [str(a) for a in inp.get("rest") or []]
    program_cid = program if ":" in str(program) else f"program:{program}"
    choices, reps, failure = run_repetitions(
        ctx, program_cid, cmd_key=cmd_key, repetitions=repetitions, env=recorded.get("env") or {},
        dep_add_tags=recorded.get("dep_add_tags") or {}, deps=forced, offline=bool(recorded.get("offline")),
        print_files=as_list(inp.get("print_files")), extra_args=extra,
        timers=not as_bool(inp.get("skip_print_timers"), "skip_print_timers"), timeout_s=_timeout(inp),
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
                              "version_differences": differences, "repetitions": [_rep_dict(r) for r in reps]}
    stats = point_statistics([{"characteristics": r.characteristics, "duration_s": r.duration_s} for r in reps])
    result["statistics"] = stats
    lines = [f"replayed point {point.uid} of {experiment.cid} ({cmd_key})"]
    before = point.metric_stats()
    after = stats.get(METRIC_KEY)
    if before and after:
        lines.append(f"{point.metric.get('name')}: recorded median {fmt(before['median'])}, now {fmt(after['median'])}")
    if as_bool(inp.get("record"), "record") and reps:
        if experiment.record is None or not ctx.registry.get(experiment.record.repo).writable:
            raise UsageError(f"{experiment.cid} is in a read-only repo", hint="use ckx benchmark --record_repo=...")
        outcome = record_point(ctx, name=experiment.name, choices=choices, features=platform_features(ctx),
                               repetitions=reps, repo=experiment.record.repo, tags=list(point.tags))
        result["recorded_point"] = outcome.point.uid
        lines.append(f"recorded {len(outcome.added)} repetition(s) in point {outcome.point.uid}")
    result["text"] = "\n".join(lines)
    return result


# -- export --------------------------------------------------------------------------------------
FIXED_COLUMNS = ["experiment", "point", "repetition", "started", "duration_s", "run_dir"]


def export_rows(experiments: Sequence[Experiment]) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per repetition: experiment, point, repetition number, choices.*, platform.*, metrics.*."""
    rows: list[dict[str, Any]] = []
    for exp in experiments:
        for point in exp.points:
            choices = {f"choices.{k}": v for k, v in flatten(point.choices).items()}
            platform = {f"platform.{k}": v for k, v in point.platform.items()}
            for number, rep in enumerate(point.repetitions, start=1):
                row: dict[str, Any] = {"experiment": exp.cid, "point": point.uid, "repetition": number,
                                       "started": rep.get("started"), "duration_s": rep.get("duration_s"),
                                       "run_dir": rep.get("run_dir")}
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


def experiment_document(exp: Experiment) -> dict:
    """The JSON export of one experiment: identity, meta and full points."""
    return {"cid": exp.cid, "uid": exp.uid, "alias": exp.alias, "tags": exp.tags, "path": str(exp.path),
            "meta": exp.meta, "points": [dict(p.to_dict(), platform=p.platform) for p in exp.points]}


def action_export(ctx: Context, inp: dict) -> dict:
    """``ckx export experiment:NAME --format=csv|json [--out=FILE]``: the repetitions as CSV or the points as JSON."""
    fmt_name = str(inp.get("format") or "csv").lower()
    if fmt_name not in ("csv", "json"):
        raise UsageError(f"--format must be csv or json, not {fmt_name!r}")
    records = experiment_records(ctx, request_cids(inp), tags=inp.get("tags"))
    if not records:
        raise NotFound("no experiments to export", hint="record one with 'ckx benchmark ... --record'")
    experiments = [read_experiment(r.path, r.meta_path, r) for r in records]
    if fmt_name == "csv":
        columns, rows = export_rows(experiments)
        text = to_csv(columns, rows)
        result: dict[str, Any] = {"return": 0, "format": "csv", "rows": len(rows), "columns": columns}
    else:
        document = {"schema_version": SCHEMA_VERSION, "experiments": [experiment_document(e) for e in experiments]}
        text = json.dumps(document, indent=2, sort_keys=True, default=str) + "\n"
        result = {"return": 0, "format": "json", "experiments": len(experiments)}
    out = inp.get("out")
    if out and out is not True:
        path = Path(str(out)).expanduser()
        if path.is_dir():
            raise UsageError(f"--out={path} is a directory", hint="give a file name, e.g. --out=results.csv")
        write_text_atomic(path, text)
        result["out"] = str(path.resolve())
        result["text"] = f"wrote {result['out']}"
    else:
        result["content"] = text
        result["text"] = text.rstrip("\n")
    return result


__all__ = [
    "Experiment", "Point", "RecordOutcome", "Repetition", "SCHEMA_VERSION", "action_benchmark", "action_export",
    "action_replay", "action_show", "compute_statistics", "export_rows", "flatten", "load_experiment",
    "migrate_v0", "numeric_characteristics", "platform_features", "platform_summary", "point_key",
    "point_statistics", "point_uid", "read_experiment", "record_point", "to_csv",
]
