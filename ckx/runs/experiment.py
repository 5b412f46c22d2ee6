"""Experiments on disk: points and their uids, reading (and migrating CK's layout), and finding experiments."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ckx.core.cid import Cid, is_uid, new_uid
from ckx.core.errors import Ambiguous, MetaError, NotFound, UsageError
from ckx.core.jsonio import read_json, read_meta_file
from ckx.runs.stats import METRIC_KEY, flatten, fmt, point_statistics
from ckx.software.platform import current_platform
from ckx.store.context import Context
from ckx.store.generic import find_entries, resolve_entry
from ckx.store.index import EntryRecord

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MODULE = "experiment"
POINTS_DIR = "points"
CK_POINT_RE = re.compile(r"^ckp-(?P<point>[^.]+)\.(?P<sub>\d{4})\.json$")


# -- platform ------------------------------------------------------------------------------------
def platform_features(ctx: Context) -> dict[str, Any]:
    """This machine's description as a plain dict (from ckx.software.platform)."""
    info = current_platform(ctx)
    return plain(info)


def plain(value: Any) -> Any:
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return plain(value.to_dict())
    if hasattr(value, "__dataclass_fields__"):
        return plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


_SUMMARY_PATHS = {
    "hostname": ("hostname", "host.name", "host.hostname", "node", "system.hostname", "os.hostname"),
    "cpu": ("cpu.model", "cpu.model_name", "cpu.name", "cpu.brand", "cpu_model", "processor", "cpu.vendor_model"),
    "cores": ("cpu.logical_cores", "cpu.count", "cpu.cores", "cpu.logical", "cpu_count", "cpu.physical_cores"),
    "os": ("os.name", "os.pretty_name", "os.description", "os.system", "os", "system"),
    "machine": ("machine", "cpu.arch", "os.machine", "arch", "cpu.architecture"),
    "fingerprint": ("platform_id",),
}


def platform_summary(features: Mapping[str, Any]) -> dict[str, Any]:
    """hostname, cpu, cores, os and machine picked from a platform description (None where absent)."""
    flat = flatten(features)
    summary: dict[str, Any] = {}
    for name, paths in _SUMMARY_PATHS.items():
        summary[name] = next((flat[p] for p in paths if flat.get(p) not in (None, "")), None)
    return summary


def machine_matches(summary: Mapping[str, Any], text: str | None) -> bool:
    """Whether a platform summary is the machine ``text`` names: part of its host name, CPU or label, or a
    prefix of its fingerprint (``platform_id``); case does not matter. No text matches every machine."""
    if not text:
        return True
    wanted = text.lower()
    fingerprint = str(summary.get("fingerprint") or "").lower()
    if fingerprint and fingerprint.startswith(wanted):
        return True
    return any(wanted in str(value).lower() for value in (summary.get("hostname"), summary.get("cpu"),
                                                         machine_label(summary)) if value)


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
    status: str = "ok"  # "failed": a sweep's combination that did not run; it has no repetitions
    failure: dict | None = None  # for a failed point: message, log_tail, node
    node: str | None = None  # the node of a cluster the point ran on
    sweep: dict | None = None  # for a sweep's point: {"params": {"env.X": "1", ...}}

    @property
    def platform(self) -> dict[str, Any]:
        return platform_summary(self.features)

    @property
    def failed(self) -> bool:
        return self.status == "failed"

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
            **({"status": self.status} if self.status != "ok" else {}),
            **({"failure": self.failure} if self.failure else {}),
            **({"node": self.node} if self.node else {}),
            **({"sweep": self.sweep} if self.sweep else {}),
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
                 tags=tuple(data.get("tags") or ()), path=path, status=str(data.get("status") or "ok"),
                 failure=data.get("failure") if isinstance(data.get("failure"), dict) else None,
                 node=data.get("node") if isinstance(data.get("node"), str) else None,
                 sweep=data.get("sweep") if isinstance(data.get("sweep"), dict) else None)


def read_experiment(entry_dir: Path, meta_path: Path, record: EntryRecord | None = None) -> Experiment:
    """Load an experiment from disk. Older layouts are migrated in memory; newer ones raise MetaError (exit 1)."""
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
        metric = metric_info(reps)
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
    new_meta["points"] = [point_summary(p) for p in points]
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


def metric_info(reps: Sequence[Mapping[str, Any]]) -> dict:
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


def point_summary(point: Point) -> dict:
    stats = point.metric_stats() or {}
    return {
        "uid": point.uid,
        "program": point.choices.get("program"),
        "cmd_key": point.choices.get("cmd_key"),
        "hostname": point.platform.get("hostname"),
        "repetitions": len(point.repetitions),
        "metric": point.metric.get("name"),
        "median": stats.get("median"),
        **({"status": point.status} if point.status != "ok" else {}),
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
    parsed = Cid.parse(cid) if isinstance(cid, str) else cid
    if parsed.module != MODULE:
        raise UsageError(f"'{parsed}' is not an experiment", hint="name one as experiment:NAME")
    record = resolve_entry(ctx, parsed)
    return read_experiment(record.path, record.meta_path, record)


# -- text for tables ----------------------------------------------------------------------------
def metric_text(point: Point) -> str:
    """"median ± stdev unit" of the point's headline metric, "FAILED" for a failed point, or "-"."""
    if point.failed:
        return "FAILED"
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


__all__ = [
    "Experiment", "MODULE", "POINTS_DIR", "Point", "RecordOutcome", "Repetition", "SCHEMA_VERSION", "env_text",
    "experiment_records", "load_experiment", "machine_label", "machine_matches", "metric_info", "metric_text",
    "migrate_v0", "plain",
    "platform_features", "platform_summary", "point_key", "point_summary", "point_uid", "read_experiment",
    "request_cids",
]
