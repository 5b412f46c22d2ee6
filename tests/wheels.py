"""Test helper: minimal pure-Python wheels written by hand (no build backend, no network)."""
from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def build_wheel(directory: Path, name: str = "ckxdemo_pkg", version: str = "1.2.3") -> Path:
    """Write ``<name>-<version>-py3-none-any.whl`` into ``directory`` and return its path.

    The wheel holds one package ``name`` whose ``__init__.py`` sets ``__version__`` and ``ANSWER = 42``,
    with METADATA, WHEEL and a RECORD of sha256 digests, so pip installs it as it would a real one.
    """
    dist_info = f"{name}-{version}.dist-info"
    project = name.replace("_", "-")
    files = {
        f"{name}/__init__.py": f"__version__ = {version!r}\nANSWER = 42\n".encode(),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: ckx-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel
