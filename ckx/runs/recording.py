"""Recording a point: repetitions added to an experiment entry under a file lock, nothing ever overwritten."""
from __future__ import annotations

import datetime as _dt
import hashlib
import shutil
from typing import Any, Mapping, Sequence

from filelock import FileLock

from ckx.core.cid import check_name, is_uid, new_uid
from ckx.core.jsonio import write_json_atomic
from ckx.runs.experiment import (
    MODULE, POINTS_DIR, SCHEMA_VERSION, Experiment, Point, RecordOutcome, Repetition, metric_info, plain,
    point_summary, point_uid, read_experiment,
)
from ckx.runs.stats import point_statistics
from ckx.store.context import Context
from ckx.store.entry import normalise_tags, validate_meta
from ckx.store.generic import _target_repo, write_new_entry
from ckx.store.repo import Repo


# -- recording -----------------------------------------------------------------------------------
def timestamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _lock(ctx: Context, repo: Repo, name: str):
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
    node: str | None = None,
    sweep: Mapping[str, Any] | None = None,
    replaces: Sequence[str] = (),
    failure: Mapping[str, Any] | None = None,
) -> RecordOutcome:
    """Add ``repetitions`` of one point to experiment ``name`` in ``repo`` (default: local), creating either.

    The point's uid is ``point_uid(choices, features)``: the same choices on the same machine add repetitions to
    the same point; nothing is ever overwritten. Files named in each repetition are copied under
    ``points/<uid>/files/<repetition>/``. Holds a per-experiment file lock, so concurrent recorders are safe.
    ``node`` names the cluster node it ran on and ``sweep`` the swept parameters' values; ``replaces`` are
    uids of earlier points (a sweep's failed record of the same combination) removed in the same update.
    With ``failure`` (message, log_tail, node) a failed point is written instead: no repetitions, its uid
    ``failed_point_uid(choices, features)``, replacing an earlier failure of the same combination.
    Raises UsageError for a bad name or a read-only repo, MetaError for an unreadable or newer experiment.
    """
    check_name(name, "experiment name")
    target = _target_repo(ctx, repo)
    tags = normalise_tags(list(tags))
    uid_name = is_uid(name)
    with _lock(ctx, target, name):
        entry_dir = target.module_dir(MODULE) / name
        created = False
        if not (entry_dir / "meta.json").is_file():
            meta = {"uid": name if uid_name else new_uid(), "alias": None if uid_name else name, "tags": tags,
                    "schema_version": SCHEMA_VERSION, "name": name, "created": timestamp(), "points": []}
            write_new_entry(ctx, target, MODULE, meta["alias"], meta["uid"], meta)
            created = True
        experiment = read_experiment(entry_dir, entry_dir / "meta.json")
        meta = dict(experiment.meta)
        existing = {p.uid: p for p in experiment.points}
        if experiment.migrated_from is not None:
            ctx.info(f"migrating {entry_dir} from schema_version {experiment.migrated_from} to {SCHEMA_VERSION}")
            for point in experiment.points:
                write_json_atomic(entry_dir / POINTS_DIR / f"{point.uid}.json", point.to_dict())

        uid = failed_point_uid(choices, features) if failure is not None else point_uid(choices, features)
        old = existing.get(uid)
        if failure is not None or (old is not None and old.failed):
            old = None  # a failure is replaced whole; a success never extends a failure's record
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
        point = Point(uid=uid, choices=dict(old.choices) if old else plain(dict(choices)),
                      features=dict(old.features) if old else plain(dict(features)), repetitions=tuple(reps),
                      statistics=point_statistics(reps), metric=metric_info(reps), tags=tuple(point_tags),
                      path=entry_dir / POINTS_DIR / f"{uid}.json",
                      status="failed" if failure is not None else "ok",
                      failure=plain(dict(failure)) if failure is not None else None,
                      node=node or (old.node if old else None),
                      sweep=plain(dict(sweep)) if sweep else (old.sweep if old else None))
        write_json_atomic(point.path, point.to_dict())
        dropped = {u for u in replaces if u != uid and u in existing}
        for gone in dropped:
            (entry_dir / POINTS_DIR / f"{gone}.json").unlink(missing_ok=True)

        created_point = uid not in existing
        points = [point if p.uid == uid else p for p in experiment.points if p.uid not in dropped]
        if created_point:
            points.append(point)
        meta["tags"] = list(dict.fromkeys(list(meta.get("tags") or []) + tags))
        meta["points"] = [point_summary(p) for p in points]
        meta["schema_version"] = SCHEMA_VERSION
        meta["updated"] = timestamp()
        meta.pop("migrated_from", None)
        validate_meta(meta, MODULE, entry_dir / "meta.json")
        write_json_atomic(entry_dir / "meta.json", meta)
    ctx.index.refresh([MODULE], force=True)
    final = Experiment(entry_dir, meta, tuple(points))
    return RecordOutcome(final, point, tuple(added), created, created_point)


def failed_point_uid(choices: Mapping[str, Any], features: Mapping[str, Any]) -> str:
    """The uid of a combination's failed record: never the uid a successful run of it gets."""
    digest = hashlib.sha256(("failed\0" + point_uid(choices, features)).encode("utf-8")).hexdigest()
    return digest[:16]


__all__ = ["failed_point_uid", "record_point", "timestamp"]
