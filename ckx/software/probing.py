"""Probing for detection: interpreters described by one cached probe, subprocesses counted, listings cached."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ckx.core.errors import CkxError
from ckx.core.jsonio import read_json, write_json_atomic
from ckx.store.context import Context

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 30.0
VERSION_TIMEOUT_S = 10.0
INTERPRETER_CACHE = "interpreters.json"
INTERPRETER_CACHE_VERSION = 3  # 3: a venv's site-packages under patched site modules

# Run by each interpreter with -S (no site import, so no .pth code runs and start-up stays ~20 ms):
# it reports sys.path as a program would see it, site directories and .pth path lines included.
# The running interpreter executes describe() in process instead (see _describe_running).
_PROBE = r"""
import json, os, sys
import site


def pth(d):
    out = []
    try:
        names = sorted(n for n in os.listdir(d) if n.endswith(".pth") and not n.startswith("."))
    except OSError:
        return out
    for n in names:
        try:
            with open(os.path.join(d, n), encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            if not line.strip() or line.startswith("#") or line.startswith(("import ", "import\t")):
                continue
            p = os.path.abspath(os.path.join(d, line.rstrip()))
            if os.path.isdir(p):
                out.append(p)
    return out


def describe(base_path):
    # site.venv() is what turns a venv's interpreter into the venv (it does not run under -S): mirror it.
    exe_dir = os.path.dirname(os.path.abspath(sys.executable))
    site_prefix = os.path.dirname(exe_dir)
    cfg = [c for c in (os.path.join(exe_dir, "pyvenv.cfg"), os.path.join(site_prefix, "pyvenv.cfg"))
           if os.path.isfile(c)]
    prefix = sys.prefix
    prefixes = [sys.base_prefix, sys.base_exec_prefix]
    user_site = not os.environ.get("PYTHONNOUSERSITE") and not sys.flags.no_user_site
    sites = []
    if cfg:
        system_site = "true"
        try:
            with open(cfg[0], encoding="utf-8") as f:
                for line in f:
                    k, _, v = line.partition("=")
                    if k.strip().lower() == "include-system-site-packages":
                        system_site = v.strip().lower()
        except OSError:
            pass
        prefix = site_prefix
        # site.venv() sets sys.prefix before it asks for the venv's site directories, and a patched
        # getsitepackages (Debian's) answers lib/pythonX.Y/site-packages only when sys.prefix differs from
        # sys.base_prefix: do the same for that one call, then put sys.prefix back (the running interpreter
        # executes this code in process).
        saved = sys.prefix, sys.exec_prefix
        sys.prefix = sys.exec_prefix = site_prefix
        try:
            sites += site.getsitepackages([site_prefix])
        finally:
            sys.prefix, sys.exec_prefix = saved
        if system_site == "true":
            prefixes = [site_prefix] + prefixes
        else:
            prefixes = [site_prefix]
            user_site = False
    if user_site:
        try:
            user = site.getusersitepackages()
        except Exception:
            user = None
        if user:
            sites.append(user)
    sites += site.getsitepackages(list(dict.fromkeys(prefixes)))
    sites = [d for d in dict.fromkeys(sites) if os.path.isdir(d)]
    path = list(base_path)
    for d in sites:
        for p in [d] + pth(d):
            if p not in path:
                path.append(p)
    v = sys.version_info
    version = "%d.%d.%d" % v[:3]
    if v[3] != "final":
        version += {"alpha": "a", "beta": "b", "candidate": "rc"}.get(v[3], v[3]) + str(v[4])
    return {
        "executable": sys.executable, "version": version, "implementation": sys.implementation.name,
        "prefix": prefix, "base_prefix": sys.base_prefix, "path": path, "sites": sites,
        "pythonpath": [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p],
        "bits": 64 if sys.maxsize > 2**32 else 32, "platform": sys.platform,
    }


if __name__ == "__main__":
    print(json.dumps(describe(sys.path[1:])))
"""


def _describe_running() -> dict[str, Any]:
    """What the probe would print for the running interpreter, computed in process (no subprocess).

    The start of a fresh interpreter's path is the PYTHONPATH entries, then the standard library
    (its zip, its directory, lib-dynload); ckx's own additions to sys.path are left out.
    """
    pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    stdlib = {os.path.normpath(p) for p in (sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")) if p}
    stdlib |= {os.path.join(p, "lib-dynload") for p in stdlib}
    zip_name = f"python{sys.version_info[0]}{sys.version_info[1]}.zip"
    base = list(pythonpath)
    for entry in sys.path:
        if entry and (os.path.normpath(entry) in stdlib or os.path.basename(entry) == zip_name) and entry not in base:
            base.append(entry)
    namespace: dict[str, Any] = {"__name__": "_ckx_probe"}
    exec(compile(_PROBE, "<ckx interpreter probe>", "exec"), namespace)  # noqa: S102 - our own constant code
    return namespace["describe"](base)


@dataclass(frozen=True)
class Interpreter:
    """What one Python interpreter reports about itself (from the probe)."""

    executable: str
    version: str
    implementation: str
    prefix: str
    base_prefix: str
    path: tuple[str, ...]
    pythonpath: tuple[str, ...]
    bits: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Interpreter:
        return cls(str(data["executable"]), str(data["version"]), str(data.get("implementation", "cpython")),
                   str(data["prefix"]), str(data.get("base_prefix", data["prefix"])), tuple(data["path"]),
                   tuple(data.get("pythonpath") or ()), int(data.get("bits", 64)))

    @property
    def default_path(self) -> tuple[str, ...]:
        """Its search path without the PYTHONPATH entries of the environment it was probed in."""
        extra = {os.path.realpath(p) for p in self.pythonpath}
        return tuple(p for p in self.path if os.path.realpath(p) not in extra)

    @property
    def version_major_minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


def _is_wrapper_script(path: str) -> bool:
    """True for a text file starting with ``#!`` (a pyenv/asdf shim), which is slow to run and may change."""
    try:
        with open(path, "rb") as handle:
            return handle.read(2) == b"#!"
    except OSError:
        return False


def _venv_root(path: str) -> str | None:
    """The venv directory of an interpreter path (its bin/ sits beside pyvenv.cfg), else None."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    return root if os.path.isfile(os.path.join(root, "pyvenv.cfg")) else None


class Session:
    """State of one detection: counts subprocesses, caches interpreter probes and directory listings."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.subprocesses = 0
        self.interpreters: dict[str, Interpreter] = {}
        self._listings: dict[str, frozenset[str]] = {}
        self._cache: dict | None = None
        self._cache_dirty = False

    # subprocesses
    def run(self, argv: Sequence[str], *, timeout: float = VERSION_TIMEOUT_S, check: bool = True,
            stderr: bool = True) -> str:
        """Run ``argv`` (no shell) and return its stdout (then stderr, unless ``stderr`` is False) as text.

        Raises CkxError when it cannot start, runs past ``timeout``, or (with ``check``) exits non-zero.
        """
        self.subprocesses += 1
        try:
            proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False,
                                  stdin=subprocess.DEVNULL, errors="replace")
        except FileNotFoundError:
            raise CkxError(f"{argv[0]} does not exist") from None
        except PermissionError:
            raise CkxError(f"{argv[0]} is not executable") from None
        except subprocess.TimeoutExpired:
            raise CkxError(f"{' '.join(argv)} ran longer than {timeout:g} s") from None
        if check and proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise CkxError(f"{' '.join(argv)} exited with status {proc.returncode}: {tail[0]}")
        return (proc.stdout or "") + (proc.stderr or "" if stderr else "")

    def listing(self, directory: str) -> frozenset[str]:
        """The names in ``directory`` (cached for this session); empty when it is not readable."""
        names = self._listings.get(directory)
        if names is None:
            try:
                names = frozenset(os.listdir(directory))
            except OSError:
                names = frozenset()
            self._listings[directory] = names
        return names

    # interpreter probes
    def _cache_file(self) -> Path:
        return self.ctx.home.cache / INTERPRETER_CACHE

    def _load_cache(self) -> dict:
        if self._cache is None:
            try:
                data = read_json(self._cache_file())
            except (OSError, CkxError):
                data = None
            ok = isinstance(data, dict) and data.get("schema_version") == INTERPRETER_CACHE_VERSION
            self._cache = data["entries"] if ok and isinstance(data.get("entries"), dict) else {}
        return self._cache

    def save_cache(self) -> None:
        """Write the probe cache back (when it changed), forgetting interpreters that are gone."""
        if self._cache_dirty and self._cache is not None:
            for key in [k for k in self._cache if not os.path.exists(k.split("|", 1)[0])]:
                del self._cache[key]
            try:
                write_json_atomic(self._cache_file(), {"schema_version": INTERPRETER_CACHE_VERSION,
                                                       "entries": self._cache})
            except OSError as exc:  # only a cache
                log.debug("cannot write %s: %s", self._cache_file(), exc)
            self._cache_dirty = False

    @staticmethod
    def _stamp(path: str, sites: Sequence[str]) -> list:
        """What must not change for a cached probe to hold: the binary, and each site dir (a new .pth)."""
        stamp: list = []
        for number, item in enumerate([os.path.realpath(path), *sites]):
            try:
                st = os.stat(item)
            except OSError:
                stamp.append([item, None, None])
                continue
            stamp.append([item, st.st_mtime_ns, st.st_size if number == 0 else 0])
        return stamp

    def interpreter(self, path: str) -> Interpreter:
        """Describe the interpreter at ``path`` with one ``-S`` probe, cached by path, mtimes and PYTHON* vars."""
        path = os.path.abspath(path)
        environ_key = "|".join(os.environ.get(k, "") for k in ("PYTHONPATH", "PYTHONHOME", "PYTHONNOUSERSITE"))
        key = f"{path}|{environ_key}"
        if key in self.interpreters:
            return self.interpreters[key]
        if sys.executable and path == os.path.abspath(sys.executable):
            info = Interpreter.from_dict(_describe_running())  # the interpreter running ckx: no subprocess
            self.interpreters[key] = info
            return info
        cacheable = not _is_wrapper_script(path)
        cache = self._load_cache()
        item = cache.get(key) if cacheable else None
        if isinstance(item, dict) and item.get("stamp") == self._stamp(path, item.get("info", {}).get("sites", [])):
            info = Interpreter.from_dict(item["info"])
        else:
            output = self.run([path, "-S", "-c", _PROBE], timeout=PROBE_TIMEOUT_S, stderr=False)
            try:
                data = json.loads(output.strip().splitlines()[-1])
            except (ValueError, IndexError):
                raise CkxError(f"{path} did not describe itself (is it a Python 3 interpreter?)") from None
            info = Interpreter.from_dict(data)
            if cacheable:
                cache[key] = {"stamp": self._stamp(path, data.get("sites", [])), "info": data}
                self._cache_dirty = True
        self.interpreters[key] = info
        return info
