"""What this CPU offers to the backends: instruction-set flags, VNNI, bf16, and the LLVM target for TVM."""
from __future__ import annotations

import functools
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@functools.lru_cache(maxsize=1)
def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The flags of the first processor in ``/proc/cpuinfo`` (empty where the file does not exist)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def has_vnni(flags: frozenset[str] | None = None) -> bool:
    """True where 8-bit dot products accumulate without saturating (AVX-512 VNNI, AVX-VNNI or AMX)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in VNNI_FLAGS)


def has_bf16(flags: frozenset[str] | None = None) -> bool:
    """True where the CPU computes in bfloat16 natively (AMX or AVX-512 bf16)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_FLAGS)


def llvm_cpu_name() -> str:
    """The CPU name LLVM (as shipped in TVM) detects for this machine, e.g. ``znver3`` or ``sapphirerapids``."""
    import tvm

    detect = tvm.get_global_func("target.llvm_get_system_cpu", True)
    name = detect() if detect is not None else ""
    return str(name) or "x86-64"


def llvm_target(threads: int) -> dict[str, object]:
    """The TVM target (JSON form) for this CPU: LLVM's name for it and the thread count."""
    return {"kind": "llvm", "mcpu": llvm_cpu_name(), "num-cores": int(threads)}
