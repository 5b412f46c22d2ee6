"""The compiler variables CK's gcc entry sets, named after the binary found (gcc-12, aarch64-linux-gnu-gcc)."""
from __future__ import annotations

import os
from pathlib import Path


def setup_env(*, full_path: Path, dir: Path) -> dict[str, str]:
    """CK_CC, CK_CXX and the binutils of the same toolchain: ``PREFIX-gcc-SUFFIX`` gives ``PREFIX-g++-SUFFIX``.

    The name is the one given (``/usr/bin/gcc`` stays ``gcc`` even when it links to ``gcc-12``), as a
    build that calls ``$CK_CC`` from PATH would see it.
    """
    name = full_path.name
    at = name.rfind("gcc")
    prefix, suffix = (name[:at], name[at + 3:]) if at >= 0 else ("", "")
    cxx = f"{prefix}g++{suffix}"
    env = {
        "CK_CC": name,
        "CK_CC_FULL_PATH": str(full_path),
        "CK_CXX": cxx,
        "CK_CXX_FULL_PATH": os.path.join(str(dir), cxx),
        "CK_AR": f"{prefix}ar",
        "CK_LB": f"{prefix}ar rcs",
        "CK_RANLIB": f"{prefix}ranlib",
        "CK_LD": f"{prefix}ld",
        "CK_OBJDUMP": f"{prefix}objdump -d",
    }
    if prefix:
        env["CK_COMPILER_PREFIX"] = prefix
    if suffix:
        env["CK_COMPILER_POSTFIX"] = suffix
    return env
