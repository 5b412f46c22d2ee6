"""CK-format programs: ckx reads them but does not run them; it names the native program doing the same job."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ckx.core.errors import CkxError, UsageError
from ckx.store.context import Context
from ckx.store.generic import merged_meta
from ckx.store.index import EntryRecord, Query

MODULE = "program"
TASK_TAG = "image-classification"
# CK's MLPERF_BACKEND values that ckx's harness spells differently.
BACKEND_NAMES = {"tf": "tensorflow", "torch": "pytorch", "onnx": "onnxruntime"}


def _text(value: Any) -> str:
    return str(value).strip().lower() if value is not None else ""


def job_of(meta: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(task, backend, device) of an MLPerf image-classification program meta, or None for another job.

    A CK program says it in its ``run_vars`` (``MLPERF_BACKEND``, ``MLPERF_DEVICE``) and tags
    (``image-classification``, ``target.gpu``); a native one in its merged ``run_vars`` and tags.
    """
    tags = {str(t) for t in meta.get("tags") or () if isinstance(t, str)}
    if TASK_TAG not in tags and f"task.{TASK_TAG}" not in tags:
        return None
    run_vars = meta.get("run_vars") if isinstance(meta.get("run_vars"), dict) else {}
    backend = _text(run_vars.get("MLPERF_BACKEND"))
    if not backend:
        return None
    device = _text(run_vars.get("MLPERF_DEVICE"))
    if not device:
        device = next((t.split(".", 1)[1] for t in sorted(tags) if t.startswith("target.")), "cpu")
    return TASK_TAG, BACKEND_NAMES.get(backend, backend), device


def native_programs(ctx: Context) -> list[tuple[EntryRecord, tuple[str, str, str]]]:
    """The native programs that run (not base entries, not CK-format ones) with the job each does."""
    found = []
    for record in ctx.index.query(Query(module=MODULE)):
        if record.ck_format or record.meta.get("abstract"):
            continue
        try:
            job = job_of(merged_meta(ctx, record))
        except CkxError:
            continue  # a broken native program is reported when it is run, not here
        if job is not None:
            found.append((record, job))
    return found


def native_equivalent(ctx: Context, record: EntryRecord) -> tuple[EntryRecord, bool] | None:
    """The native program that does the job of the CK-format program ``record``, and whether it is exact.

    Exact: same task, backend and device. Otherwise, one with the same task and backend on another device
    (ckx's programs run on the CPU; CK's GPU variants map to them, not exactly). None when no native
    program does that job.
    """
    job = job_of(record.meta)
    if job is None:
        return None
    programs = native_programs(ctx)
    for native, native_job in programs:
        if native_job == job:
            return native, True
    for native, native_job in programs:
        if native_job[:2] == job[:2]:
            return native, False
    return None


def ck_program_error(ctx: Context, record: EntryRecord, *, cmd_key: str | None = None) -> UsageError:
    """The one-line error for running the CK-format program ``record``, naming a native program where one fits."""
    where = f"program {record.cid} is in CK's format, which ckx does not run"
    found = native_equivalent(ctx, record)
    if found is None:
        return UsageError(f"{where}, and no native ckx program does its job",
                          hint="'ckx list program' shows the programs ckx runs")
    native, exact = found
    _, backend, device = job_of(record.meta) or ("", "", "")
    command = f"ckx run program:{native.name}" + (f" --cmd_key={cmd_key}" if cmd_key else "")
    if exact:
        return UsageError(f"{where}; the native program {native.name} does the same job ({backend} on {device}): "
                          f"{command}", hint=command)
    native_device = (job_of(merged_meta(ctx, native)) or ("", "", "?"))[2]
    return UsageError(f"{where}; ckx has no native program for {backend} on {device}; the nearest, {native.name}, "
                      f"runs the same benchmark with {backend} on {native_device}: {command}", hint=command)
