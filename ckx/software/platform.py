"""This machine's description (CPU, memory, OS, Python, accelerators), recorded as a platform entry."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform as _platform
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ckx.store.context import Context
from ckx.core.jsonio import read_json, write_json_atomic
from ckx.core.cid import new_uid
from ckx.store.generic import write_new_entry
from ckx.store.index import Query
from ckx.store.repo import now_iso

log = logging.getLogger(__name__)

MODULE = "platform"
PLATFORM_SCHEMA_VERSION = 1
CACHE_NAME = "platform.json"
# Without a boot id (not Linux) the cached description is trusted for this long.
CACHE_MAX_AGE_S = 24 * 3600
# The fields that say "the same machine": a change in any of them makes a new platform entry.
IDENTITY_FIELDS = ("hostname", "machine", "cpu.model", "cpu.logical_cores", "memory.total_gib", "os.system")


def os_name() -> str:
    """CK's short OS name: linux, macos, windows, or sys.platform for anything else."""
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform == "darwin":
        return "macos"
    if sys.platform in ("win32", "cygwin"):
        return "windows"
    return sys.platform


def bits() -> int:
    """64 or 32: the word size of the running interpreter."""
    return 64 if sys.maxsize > 2**32 else 32


def platform_tags() -> list[str]:
    """The tags CK puts on every env: host-os-linux-64, target-os-linux-64, 64bits."""
    name = f"{os_name()}-{bits()}"
    return [f"host-os-{name}", f"target-os-{name}", f"{bits()}bits"]


# -- reading the machine -------------------------------------------------------------------------
def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def _cpu_info() -> dict[str, Any]:
    """CPU model, vendor, cores and flags from /proc/cpuinfo (Linux), else from the platform module."""
    logical = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = logical
    info: dict[str, Any] = {"model": None, "vendor": None, "logical_cores": logical, "usable_cores": usable,
                            "physical_cores": None, "sockets": None, "flags": [], "arch": _platform.machine()}
    text = _read_text("/proc/cpuinfo")
    if text:
        cores: set[tuple[str, str]] = set()
        sockets: set[str] = set()
        physical_id = core_id = None
        for line in text.splitlines() + [""]:
            if not line.strip():
                if physical_id is not None and core_id is not None:
                    cores.add((physical_id, core_id))
                physical_id = core_id = None
                continue
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key in ("model name", "Model", "cpu model") and not info["model"]:
                info["model"] = value
            elif key in ("vendor_id", "CPU implementer") and not info["vendor"]:
                info["vendor"] = value
            elif key in ("flags", "Features") and not info["flags"]:
                info["flags"] = sorted(set(value.split()))
            elif key == "physical id":
                physical_id = value
                sockets.add(value)
            elif key == "core id":
                core_id = value
        info["physical_cores"] = len(cores) or None
        info["sockets"] = len(sockets) or None
    if not info["model"]:
        info["model"] = _platform.processor() or _platform.machine() or None
    return info


def _memory_info() -> dict[str, Any]:
    """Total memory in bytes (and GiB, rounded) from /proc/meminfo or sysconf."""
    total = None
    text = _read_text("/proc/meminfo")
    if text:
        for line in text.splitlines():
            if line.startswith("MemTotal:"):
                parts = line.split()
                if len(parts) >= 2 and parts[1].isdigit():
                    total = int(parts[1]) * 1024
                break
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            total = None
    return {"total_bytes": total, "total_gib": round(total / 2**30, 1) if total else None}


def _os_info() -> dict[str, Any]:
    """OS name (the distribution's pretty name where known), system, kernel release and distribution id."""
    info: dict[str, Any] = {"system": _platform.system(), "release": _platform.release(), "short": os_name(),
                            "bits": bits(), "name": None, "id": None, "version_id": None}
    text = _read_text("/etc/os-release") or _read_text("/usr/lib/os-release")
    if text:
        fields = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key.strip()] = value.strip().strip('"')
        info["name"] = fields.get("PRETTY_NAME")
        info["id"] = fields.get("ID")
        info["version_id"] = fields.get("VERSION_ID")
    if not info["name"]:
        if sys.platform == "darwin":
            info["name"] = f"macOS {_platform.mac_ver()[0]}".strip()
        else:
            info["name"] = f"{info['system']} {info['release']}".strip()
    return info


def _python_info() -> dict[str, Any]:
    return {
        "version": ".".join(str(p) for p in sys.version_info[:3]),
        "implementation": sys.implementation.name,
        "executable": sys.executable,
        "prefix": sys.prefix,
    }


def _accelerators() -> list[dict[str, Any]]:
    """NVIDIA GPUs the kernel driver lists under /proc (no subprocess, nothing imported)."""
    found = []
    root = Path("/proc/driver/nvidia/gpus")
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return found
    for entry in entries:
        text = _read_text(str(entry / "information")) or ""
        fields = {}
        for line in text.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        found.append({"vendor": "nvidia", "model": fields.get("Model"), "bus": entry.name})
    return found


def describe_machine() -> dict[str, Any]:
    """A fresh description of this machine; reads /proc and the platform module, runs no subprocess."""
    return {
        "hostname": socket.gethostname(),
        "machine": _platform.machine(),
        "cpu": _cpu_info(),
        "memory": _memory_info(),
        "os": _os_info(),
        "python": _python_info(),
        "accelerators": _accelerators(),
        "tags": platform_tags(),
    }


def platform_id(features: dict[str, Any]) -> str:
    """A stable 16-hex id of the identity fields (hostname, CPU, cores, memory, OS)."""
    values = {}
    for dotted in IDENTITY_FIELDS:
        node: Any = features
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        values[dotted] = node
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


# -- the platform entry --------------------------------------------------------------------------
def record_platform(ctx: Context, features: dict[str, Any]) -> dict[str, Any]:
    """Write (or update) the platform entry of these features in the local repo; returns the entry's meta."""
    # reason: filelock loads only when a record is written under a lock (light start-up)
    from filelock import FileLock

    ident = platform_id(features)
    repo = ctx.registry.get("local")
    ctx.home.locks.mkdir(parents=True, exist_ok=True)
    with FileLock(str(ctx.home.locks / "platforms.lock"), timeout=60):
        ctx.index.refresh([MODULE], force=True)
        for record in ctx.index.query(Query(module=MODULE, repo=repo.name)):
            meta = record.meta
            if meta.get("platform_id") != ident:
                continue
            if meta.get("features") != features:
                meta["features"] = features
                meta["updated"] = now_iso()
                write_json_atomic(record.meta_path, meta)
                ctx.index.refresh([MODULE], force=True)
            return meta
        now = now_iso()
        cpu = features.get("cpu") or {}
        meta = {
            "uid": new_uid(), "alias": None, "schema_version": PLATFORM_SCHEMA_VERSION,
            "name": f"{features.get('hostname')}: {cpu.get('model')}",
            "tags": ["platform", *features.get("tags", []), *(t for t in [features.get("machine")] if t)],
            "platform_id": ident, "features": features, "created": now, "updated": now,
        }
        write_new_entry(ctx, repo, MODULE, None, meta["uid"], meta, validate=False)
        return meta


def _boot_id() -> str | None:
    text = _read_text("/proc/sys/kernel/random/boot_id")
    return text.strip() if text else None


def _cache_path(ctx: Context) -> Path:
    return ctx.home.cache / CACHE_NAME


def _cached(ctx: Context) -> dict[str, Any] | None:
    path = _cache_path(ctx)
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    except Exception:  # a corrupt cache is only a cache  # noqa: BLE001
        return None
    if not isinstance(data, dict) or data.get("schema_version") != PLATFORM_SCHEMA_VERSION:
        return None
    boot = _boot_id()
    if boot is not None:
        if data.get("boot_id") != boot:
            return None
    elif time.time() - float(data.get("time", 0)) > CACHE_MAX_AGE_S:
        return None
    info = data.get("platform")
    entry_path = data.get("entry_path")
    if not isinstance(info, dict) or not entry_path or not Path(entry_path).is_dir():
        return None  # the platform entry was removed: record it again
    return info


def current_platform(ctx: Context, *, refresh: bool = False) -> dict[str, Any]:
    """This machine's features plus ``uid`` and ``platform_id`` of its platform entry, cached per boot.

    The first call after a boot (or with ``refresh``) describes the machine and records the entry;
    later calls read $CKX_HOME/cache/platform.json.
    """
    if not refresh:
        cached = _cached(ctx)
        if cached is not None:
            return cached
    features = describe_machine()
    meta = record_platform(ctx, features)
    info = dict(features, uid=meta["uid"], platform_id=meta["platform_id"])
    entry_path = ctx.registry.get("local").module_dir(MODULE) / meta["uid"]
    try:
        write_json_atomic(_cache_path(ctx), {
            "schema_version": PLATFORM_SCHEMA_VERSION, "boot_id": _boot_id(), "time": time.time(),
            "entry_path": str(entry_path), "platform": info,
        })
    except OSError as exc:  # the cache is an optimisation only
        log.debug("cannot write the platform cache: %s", exc)
    return info


def action_detect_platform(ctx: Context, inp: dict) -> dict:
    """``ckx detect platform``: describe this machine afresh, record it, and print a summary."""
    info = current_platform(ctx, refresh=True)
    cpu, memory, os_info, python = info["cpu"], info["memory"], info["os"], info["python"]
    flags = cpu.get("flags") or []
    interesting = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile", "fma", "neon", "asimd") if f in flags]
    lines = [
        f"platform   {info['uid']} (id {info['platform_id']})",
        f"host       {info['hostname']}",
        f"cpu        {cpu.get('model')} ({cpu.get('arch')})",
        (f"cores      {cpu.get('logical_cores')} logical, {cpu.get('physical_cores') or '?'} physical, "
         f"{cpu.get('usable_cores')} usable"),
        f"flags      {len(flags)}" + (f" (including {' '.join(interesting)})" if interesting else ""),
        f"memory     {memory.get('total_gib')} GiB",
        f"os         {os_info.get('name')} ({os_info.get('system')} {os_info.get('release')}, {os_info.get('bits')}-bit)",
        f"python     {python.get('version')} {python.get('executable')}",
    ]
    for gpu in info.get("accelerators") or []:
        lines.append(f"accel      {gpu.get('vendor')} {gpu.get('model')}")
    if inp.get("platform_init_uoa"):
        lines.append(f"(--platform_init_uoa={inp['platform_init_uoa']}: ckx describes this machine itself and needs "
                     "no platform init entry)")
    return {"return": 0, "platform": info, "text": "\n".join(lines)}


__all__ = ["action_detect_platform", "bits", "current_platform", "describe_machine", "os_name", "platform_id",
           "platform_tags", "record_platform"]
