"""Detecting software already on the machine from soft entries, and recording each instance as an env.

A soft entry declares how to find its thing (``detect.kind``):

- ``python``: interpreters (the running one, ``python3``/``python`` on PATH, or ``--full_path``), each
  described by ONE short ``python -S -c`` subprocess whose answer is cached in $CKX_HOME/cache (the
  interpreter running ckx describes itself in process, with no subprocess at all);
- ``module``: a Python package in an interpreter's search path, found and versioned by reading the
  files (``<site>/<module>/__init__.py``, ``*.dist-info/METADATA``) without importing it anywhere;
- ``executable``: programs on PATH, versioned by running ``[exe, *version_args]`` through a regex;
- ``marker``: a marker file (glob allowed, with sibling files) under search directories, to a depth.

``customize.py`` beside the meta may define the keyword-only hooks in ``HOOKS``; any other public
function is an error naming the file. A hook that raises becomes a warning naming the soft entry and
the candidate, and detection goes on with the next candidate.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckx.store.context import Context
from ckx.software.envs import (
    EnvRecord,
    compare_versions,
    is_automatic_tag,
    load_env,
    record_env_ex,
    version_text,
)
from ckx.core.errors import CkxError, MetaError, NotFound, UsageError
from ckx.software.hooks import call_hook, load_hooks as load_hook_file
from ckx.software.environment import render_text
from ckx.store.index import EntryRecord, Query, split_tags
from ckx.core.jsonio import read_json, write_json_atomic

log = logging.getLogger(__name__)

MODULE = "soft"
KINDS = ("python", "module", "executable", "marker")
CUSTOMIZE = "customize.py"
# Hook name -> the keyword arguments ckx offers it; a hook declares the subset it wants.
HOOKS: dict[str, frozenset[str]] = {
    "find_candidates": frozenset({"meta", "search_dirs", "depth", "python", "environ"}),
    "detect_version": frozenset({"full_path", "meta", "python", "run"}),
    "setup_env": frozenset({"full_path", "version", "meta", "env", "python", "dir"}),
    "extra_tags": frozenset({"full_path", "version", "meta", "python"}),
}
PROBE_TIMEOUT_S = 30.0
VERSION_TIMEOUT_S = 10.0
DEFAULT_MARKER_DEPTH = 2
MAX_MARKER_DIRS = 50_000
INTERPRETER_CACHE = "interpreters.json"
INTERPRETER_CACHE_VERSION = 2
DEFAULT_PYTHON_DEP = {"python": {"tags": "compiler,python", "sort": 0}}

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
        sites += site.getsitepackages([site_prefix])
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
    import sysconfig

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


_ACTIVE_SESSION: ContextVar[_Session | None] = ContextVar("ckx_detect_session", default=None)


class _CandidateFailed(Exception):
    """One candidate could not be described; the message names the soft entry and the candidate."""


# -- soft entries ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SoftEntry:
    """A native soft entry with a ``detect`` section and its validated hooks."""

    alias: str
    uid: str | None
    path: Path
    meta_path: Path
    meta: dict
    hooks: Mapping[str, Callable[..., Any]] = field(default_factory=dict)

    @property
    def detect(self) -> dict:
        return self.meta["detect"]

    @property
    def kind(self) -> str:
        return self.detect["kind"]

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self.meta.get("tags") or ())

    @property
    def optional_tags(self) -> tuple[str, ...]:
        """Tags some instances get (onnxruntime-cpu for the CPU wheel): a soft may provide them."""
        return _optional_tags(self.meta)

    @property
    def env_prefix(self) -> str | None:
        return self.meta.get("env_prefix")

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.alias)

    def can_provide(self, tags: Iterable[str]) -> bool:
        """True when every tag is one of its tags, optional tags, or an automatic (version/platform) tag."""
        return _can_provide(self.meta, tags)


def _optional_tags(meta: Mapping[str, Any]) -> tuple[str, ...]:
    tags = [t for t in meta.get("optional_tags") or () if isinstance(t, str)]
    detect = meta.get("detect") if isinstance(meta.get("detect"), dict) else {}
    distribution_tags = detect.get("distribution_tags")
    for extra in distribution_tags.values() if isinstance(distribution_tags, dict) else ():
        if isinstance(extra, list):
            tags.extend(t for t in extra if isinstance(t, str))
    return tuple(dict.fromkeys(tags))


def _can_provide(meta: Mapping[str, Any], tags: Iterable[str]) -> bool:
    known = set(meta.get("tags") or ()) | set(_optional_tags(meta))
    return all(t in known or is_automatic_tag(t) for t in tags)


def _fail_meta(soft_path: Path, field_name: str, message: str) -> MetaError:
    return MetaError(f"{soft_path}: field '{field_name}': {message}")


def _check_detect(meta: dict, meta_path: Path) -> None:
    detect = meta.get("detect")
    if not isinstance(detect, dict):
        raise _fail_meta(meta_path, "detect", "a soft entry needs a 'detect' object")
    kind = detect.get("kind")
    if kind not in KINDS:
        raise _fail_meta(meta_path, "detect.kind", f"must be one of {', '.join(KINDS)}, not {kind!r}")
    needs = {"module": ("module",), "executable": ("names",), "marker": ("files",)}.get(kind, ())
    for key in needs:
        if not detect.get(key):
            raise _fail_meta(meta_path, f"detect.{key}", f"a '{kind}' soft needs it")
    for key in ("names", "files", "distributions", "version_args", "search_dirs", "version_files"):
        value = detect.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise _fail_meta(meta_path, f"detect.{key}", "must be a list of strings")
    distribution_tags = detect.get("distribution_tags")
    if distribution_tags is not None and not (
            isinstance(distribution_tags, dict)
            and all(isinstance(v, list) and all(isinstance(t, str) for t in v) for v in distribution_tags.values())):
        raise _fail_meta(meta_path, "detect.distribution_tags", "must map distribution names to lists of tags")
    optional = meta.get("optional_tags")
    if optional is not None and not (isinstance(optional, list) and all(isinstance(t, str) for t in optional)):
        raise _fail_meta(meta_path, "optional_tags", "must be a list of strings")
    if detect.get("version_regex"):
        try:
            re.compile(detect["version_regex"])
        except re.error as exc:
            raise _fail_meta(meta_path, "detect.version_regex", f"invalid regular expression: {exc}") from None
    env = meta.get("env", {})
    if not isinstance(env, dict):
        raise _fail_meta(meta_path, "env", "must be an object of variable templates")


_HOOK_CACHE: dict[tuple[str, int], dict[str, Callable[..., Any]]] = {}


def load_hooks(path: Path) -> dict[str, Callable[..., Any]]:
    """Load a soft's customize.py and return its hooks by name (cached while the file is unchanged).

    Raises MetaError naming the file when it cannot be imported, when it defines a public function
    that is not a hook, or when a hook takes positional or unknown parameters (ckx.software.hooks).
    """
    try:
        stamp = path.stat().st_mtime_ns
    except OSError as exc:
        raise MetaError(f"{path}: cannot read it: {exc.strerror}") from None
    cached = _HOOK_CACHE.get((str(path), stamp))
    if cached is None:
        cached = _HOOK_CACHE[(str(path), stamp)] = load_hook_file(path, HOOKS, file_label="a customize.py")
    return cached


def load_soft(record: EntryRecord) -> SoftEntry:
    """A SoftEntry from an indexed soft record; MetaError names the file for a bad meta or customize.py."""
    meta = record.meta
    _check_detect(meta, record.meta_path)
    hooks_path = record.path / CUSTOMIZE
    hooks = load_hooks(hooks_path) if hooks_path.is_file() else {}
    return SoftEntry(record.alias or record.uid or record.path.name, record.uid, record.path, record.meta_path,
                     meta, hooks)


def find_softs(ctx: Context, tags: str | Sequence[str] | None = None) -> list[SoftEntry]:
    """Native soft entries able to provide ``tags`` (optional and automatic tags count), in registry order.

    Entries without a ``detect`` section (CK-format softs, whose customize.py ckx does not run) are
    skipped; a broken soft entry is reported as a warning and skipped.
    """
    include, exclude = split_tags(tags)
    found = []
    for record in ctx.index.query(Query(module=MODULE)):
        meta = record.meta
        if not isinstance(meta.get("detect"), dict):
            continue
        if any(t in (meta.get("tags") or ()) for t in exclude):
            continue
        if not _can_provide(meta, include):
            continue  # decided from the meta alone: no customize.py is imported for softs that cannot match
        try:
            found.append(load_soft(record))
        except MetaError as exc:
            ctx.warn(f"skipped soft {record.cid}: {exc}")
    return found


def get_soft(ctx: Context, name: str) -> SoftEntry:
    """The soft entry called ``name`` (alias or uid, ``repo:`` prefix allowed); NotFound/UsageError otherwise."""
    from ckx.core.cid import Cid
    from ckx.store.generic import resolve_entry

    repo = None
    if ":" in name:
        repo, name = name.rsplit(":", 1)
    record = resolve_entry(ctx, Cid(module=MODULE, entry=name, repo=repo))
    if not isinstance(record.meta.get("detect"), dict):
        raise UsageError(
            f"soft {record.cid} has no 'detect' section, so ckx cannot run it"
            + (" (it is in CK's format, whose customize.py ckx does not execute)" if record.meta_path.parent.name == ".cm" else ""),
            hint="use a native soft entry (ckx list soft) or record the thing with 'ckx install package'",
        )
    return load_soft(record)


# -- interpreters --------------------------------------------------------------------------------
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


class _Session:
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


# -- what one candidate turned out to be ---------------------------------------------------------
@dataclass
class _Found:
    full_path: str
    version: str | None
    values: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    deps: dict[str, str] = field(default_factory=dict)
    extra_meta: dict[str, Any] = field(default_factory=dict)


def _expand_dirs(items: Iterable[str]) -> list[str]:
    out = []
    for item in items:
        text = os.path.expandvars(os.path.expanduser(str(item).strip()))
        if text and "$" not in text:
            out.append(os.path.abspath(text))
    return list(dict.fromkeys(out))


def _split_list(value: Any) -> list[str]:
    """A list from a list, or from a comma/os.pathsep separated string (CLI values)."""
    if value is None or value is True or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if str(v).strip()]
    return [p for p in re.split(rf"[,{re.escape(os.pathsep)}]", str(value)) if p.strip()]


# -- the detector --------------------------------------------------------------------------------
@dataclass
class DetectReport:
    """What a detection did: the envs (new or already recorded) and how many subprocesses it ran."""

    envs: list[EnvRecord] = field(default_factory=list)
    new: list[bool] = field(default_factory=list)
    softs: list[str] = field(default_factory=list)
    subprocesses: int = 0


class _Detector:
    def __init__(self, ctx: Context, session: _Session, soft: SoftEntry, *, full_path: str | None,
                 search_dirs: list[str], search_depth: int | None, force_version: str | None,
                 extra_tags: list[str], python_env: EnvRecord | None) -> None:
        self.ctx = ctx
        self.session = session
        self.soft = soft
        self.full_path = full_path
        self.search_dirs = search_dirs
        self.search_depth = search_depth
        self.force_version = force_version
        self.extra_tags = extra_tags
        self.python_env = python_env

    # hooks
    def _hook(self, name: str, candidate: str, **offered: Any) -> Any:
        function = self.soft.hooks.get(name)
        if function is None:
            return None
        try:
            return call_hook(function, offered)
        except Exception as exc:  # noqa: BLE001 - a broken hook must not stop detection
            raise _CandidateFailed(f"soft {self.soft.alias}: {CUSTOMIZE} {name}() failed for candidate "
                                   f"{candidate}: {type(exc).__name__}: {exc}") from None

    def _python_path(self) -> str | None:
        return self.python_env.full_path if self.python_env else None

    def extra_candidates(self) -> list[str]:
        try:
            result = self._hook("find_candidates", "(search)", meta=self.soft.meta, search_dirs=list(self.search_dirs),
                                depth=self.search_depth, python=self._python_path(), environ=dict(os.environ))
        except _CandidateFailed as exc:
            self.ctx.warn(str(exc))
            return []
        if result is None:
            return []
        if isinstance(result, (str, os.PathLike)) or not isinstance(result, Iterable):
            self.ctx.warn(f"soft {self.soft.alias}: find_candidates() must return a list of paths; ignored")
            return []
        return [str(p) for p in result]

    # the run
    def detect(self) -> Iterator[_Found]:
        kind = self.soft.kind
        produce = {"python": self._pythons, "module": self._modules, "executable": self._executables,
                   "marker": self._markers}[kind]
        for candidate, describe in produce():
            try:
                found = describe()
                if found is None:
                    continue
                yield self._finish(candidate, found)
            except _CandidateFailed as exc:
                self.ctx.warn(str(exc))
            except CkxError as exc:
                if isinstance(exc, MetaError):
                    raise
                self.ctx.warn(f"soft {self.soft.alias}: skipped candidate {candidate}: {exc}")

    def _finish(self, candidate: str, found: _Found) -> _Found:
        if self.force_version:
            found.version = self.force_version
        version = found.version or ""
        split = version.split(".")
        values = dict(found.values)
        values.update({
            "full_path": found.full_path, "version": version, "version_major": split[0] if version else "",
            "version_major_minor": ".".join(split[:2]) if version else "", "prefix": self.soft.env_prefix or "",
        })
        values.setdefault("dir", os.path.dirname(found.full_path))
        values.setdefault("name", os.path.basename(found.full_path))
        values.setdefault("python", self._python_path() or "")
        env: dict[str, str] = {}
        for key, template in (self.soft.meta.get("env") or {}).items():
            where = f"{self.soft.meta_path}: field 'env.{key}'"
            name = render_text(str(key), values, where=where)
            value = render_text(str(template), values, where=where)
            if value != "":
                env[name] = value
        env.update(found.env)
        extra = self._hook("setup_env", candidate, full_path=Path(found.full_path), version=found.version,
                           meta=self.soft.meta, env=dict(env), python=self._python_path(), dir=Path(values["dir"]))
        if extra is not None:
            if not isinstance(extra, Mapping):
                raise _CandidateFailed(f"soft {self.soft.alias}: setup_env() returned {type(extra).__name__}, "
                                       f"not a dict, for candidate {candidate}")
            env.update({str(k): str(v) for k, v in extra.items() if v is not None})
        tags = self._hook("extra_tags", candidate, full_path=Path(found.full_path), version=found.version,
                          meta=self.soft.meta, python=self._python_path())
        if tags is not None:
            if isinstance(tags, str) or not isinstance(tags, Iterable):
                raise _CandidateFailed(f"soft {self.soft.alias}: extra_tags() must return a list of tags "
                                       f"(candidate {candidate})")
            found.tags.extend(str(t) for t in tags)
        found.env = env
        return found

    def _version_from_hook(self, candidate: str) -> tuple[bool, str | None]:
        if "detect_version" not in self.soft.hooks:
            return False, None
        result = self._hook("detect_version", candidate, full_path=Path(candidate), meta=self.soft.meta,
                            python=self._python_path(), run=lambda argv, timeout=VERSION_TIMEOUT_S:
                            self.session.run([str(a) for a in argv], timeout=timeout))
        if result is not None and not isinstance(result, str):
            raise _CandidateFailed(f"soft {self.soft.alias}: detect_version() returned {type(result).__name__}, "
                                   f"not a string, for candidate {candidate}")
        return True, result

    # kind: python -----------------------------------------------------------------------------
    def _python_candidates(self) -> list[tuple[str, bool]]:
        if self.full_path:
            return [(self.full_path, True)]
        names = self.soft.detect.get("names") or ["python3", "python"]
        found: list[tuple[str, bool]] = []
        for directory in _expand_dirs(self.search_dirs):
            for sub in ("bin", ""):
                for name in names:
                    candidate = os.path.join(directory, sub, name)
                    if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                        found.append((candidate, True))
        found.extend((p, True) for p in self.extra_candidates())
        if sys.executable:
            found.append((sys.executable, False))
        for name in names:
            which = shutil.which(name)
            if which:
                found.append((which, False))
        return found

    def _pythons(self) -> Iterator[tuple[str, Callable[[], _Found | None]]]:
        seen_pre: set[tuple[str, str | None]] = set()
        seen_post: set[tuple[str, str]] = set()
        for candidate, explicit in self._python_candidates():
            if not os.path.exists(candidate):
                if explicit:
                    self.ctx.warn(f"soft {self.soft.alias}: {candidate} does not exist")
                continue
            key = (os.path.realpath(candidate), _venv_root(candidate))
            if key in seen_pre:
                continue
            seen_pre.add(key)
            if not explicit and _is_wrapper_script(candidate):
                log.debug("skipping the wrapper script %s (pass it as --full_path to probe it)", candidate)
                continue

            def describe(candidate: str = candidate) -> _Found | None:
                interp = self.session.interpreter(candidate)
                post = (os.path.realpath(interp.executable), interp.prefix)
                if post in seen_post:
                    return None
                seen_post.add(post)
                hooked, version = self._version_from_hook(interp.executable)
                return _Found(
                    full_path=interp.executable, version=version if hooked else interp.version,
                    values={"version_major_minor": interp.version_major_minor, "python_prefix": interp.prefix,
                            "python": interp.executable},
                    extra_meta={"python_prefix": interp.prefix, "python_implementation": interp.implementation,
                                "python_bits": interp.bits},
                )

            yield candidate, describe

    # kind: module -----------------------------------------------------------------------------
    def _modules(self) -> Iterator[tuple[str, Callable[[], _Found | None]]]:
        if self.python_env is None or not self.python_env.full_path:
            raise CkxError(f"soft {self.soft.alias}: no Python interpreter to look in")
        python = self.python_env.full_path
        module = self.soft.detect["module"]

        def describe() -> _Found | None:
            interp = self.session.interpreter(python)
            hit = self._explicit_module(module) if self.full_path else None
            if hit is None and self.full_path:
                raise _CandidateFailed(f"soft {self.soft.alias}: {self.full_path} is not the module {module!r} "
                                       "nor a directory holding it")
            if hit is None:
                extra_dirs = _expand_dirs(self.search_dirs + self.extra_candidates())
                hit = self._find_module(module, [*extra_dirs, *interp.path])
            if hit is None:
                return None
            site_dir, module_path = hit
            found = _Found(full_path=module_path, version=None,
                           values={"site_dir": site_dir, "dir": site_dir, "module_dir": module_path, "name": module},
                           deps={"python": self.python_env.uid} if self.python_env else {},
                           extra_meta={"python": interp.executable, "python_module": module})
            distribution, version = self._distribution_version(site_dir, module)
            hooked, hook_version = self._version_from_hook(module_path)
            if hooked:
                version = hook_version
            elif version is None:
                version = self._version_from_files(module_path)
            found.version = version
            if distribution:
                found.extra_meta["python_distribution"] = distribution
                found.values["distribution"] = distribution
                found.tags.extend((self.soft.detect.get("distribution_tags") or {}).get(distribution, []))
            default = {os.path.realpath(p) for p in interp.default_path}
            if os.path.realpath(site_dir) not in default:
                found.env["PYTHONPATH"] = site_dir
            return found

        yield python, describe

    def _explicit_module(self, module: str) -> tuple[str, str] | None:
        path = os.path.abspath(os.path.expanduser(self.full_path or ""))
        if os.path.isfile(path) and os.path.basename(path) == "__init__.py":
            path = os.path.dirname(path)
        base = os.path.basename(path)
        if base == module or base == f"{module}.py" or (base.startswith(module + ".") and base.endswith((".so", ".pyd"))):
            return (os.path.dirname(path), path) if os.path.exists(path) else None
        if os.path.isdir(path):
            return self._find_module(module, [path])
        return None

    def _find_module(self, module: str, directories: Iterable[str]) -> tuple[str, str] | None:
        """(site dir, module path) of what ``import module`` would load, searching ``directories`` in order.

        As the import system does: in each directory a package, then an extension module, then a .py
        file; a directory without __init__.py is a namespace portion, used only when nothing else is found.
        """
        namespace: tuple[str, str] | None = None
        for directory in directories:
            if not directory or not os.path.isdir(directory):
                continue
            names = self.session.listing(directory)
            if module in names and os.path.isfile(os.path.join(directory, module, "__init__.py")):
                return directory, os.path.join(directory, module)
            for name in sorted(names):
                if name.startswith(module + ".") and name.endswith((".so", ".pyd")):
                    return directory, os.path.join(directory, name)
            if f"{module}.py" in names:
                return directory, os.path.join(directory, f"{module}.py")
            if namespace is None and module in names and os.path.isdir(os.path.join(directory, module)):
                namespace = (directory, os.path.join(directory, module))
        return namespace

    def _distribution_version(self, site_dir: str, module: str) -> tuple[str | None, str | None]:
        """(distribution, version) from the ``*.dist-info``/``*.egg-info`` beside the module."""
        wanted = [_canonical(d) for d in (self.soft.detect.get("distributions") or [module])]
        best: dict[str, tuple[str, Path]] = {}
        for name in self.session.listing(site_dir):
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            stem = name.rsplit(".", 1)[0]
            dist, _, rest = stem.partition("-")
            canonical = _canonical(dist)
            if canonical in wanted:
                version_hint = rest.split("-")[0] if rest else ""
                previous = best.get(canonical)
                # stale metadata of an older version may linger beside the new one: keep the newest
                if previous is None or (version_hint and previous[0]
                                        and compare_versions(version_hint, previous[0]) > 0):
                    best[canonical] = (version_hint, Path(site_dir) / name)
        for canonical in wanted:
            if canonical not in best:
                continue
            version_hint, path = best[canonical]
            version = _metadata_version(path) or version_hint or None
            return canonical, version
        return None, None

    def _version_from_files(self, module_path: str) -> str | None:
        """``__version__ = "x"`` (or the soft's ``version_attr``) in the module's version files."""
        attr = self.soft.detect.get("version_attr") or "__version__"
        pattern = re.compile(rf"^\s*{re.escape(attr)}\s*(?::\s*str\s*)?=\s*[\"']([^\"']+)[\"']", re.MULTILINE)
        if os.path.isdir(module_path):
            names = self.soft.detect.get("version_files") or ["__init__.py", "version.py", "_version.py", "__about__.py"]
            files = [os.path.join(module_path, n) for n in names]
        else:
            files = [module_path] if module_path.endswith(".py") else []
        for path in files:
            try:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    text = handle.read(200_000)
            except OSError:
                continue
            match = pattern.search(text)
            if match:
                return match.group(1)
        return None

    # kind: executable -------------------------------------------------------------------------
    def _executables(self) -> Iterator[tuple[str, Callable[[], _Found | None]]]:
        detect = self.soft.detect
        names = detect["names"]
        candidates: list[str] = []
        if self.full_path:
            candidates.append(os.path.abspath(os.path.expanduser(self.full_path)))
        else:
            for directory in _expand_dirs(self.search_dirs):
                for sub in ("", "bin"):
                    for name in names:
                        candidates.append(os.path.join(directory, sub, name))
            candidates.extend(self.extra_candidates())
            every = bool(detect.get("all_on_path"))
            for name in names:
                for directory in os.environ.get("PATH", "").split(os.pathsep):
                    if not directory:
                        continue
                    path = os.path.join(directory, name)
                    if os.path.isfile(path) and os.access(path, os.X_OK):
                        candidates.append(path)
                        if not every:
                            break
        seen: set[str] = set()
        for candidate in candidates:
            if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
                if self.full_path:
                    self.ctx.warn(f"soft {self.soft.alias}: {candidate} is not an executable file")
                continue
            real = os.path.realpath(candidate)
            if real in seen:
                continue
            seen.add(real)

            def describe(candidate: str = candidate) -> _Found | None:
                hooked, version = self._version_from_hook(candidate)
                if not hooked:
                    version = self._run_version(candidate)
                return _Found(full_path=candidate, version=version, values={})

            yield candidate, describe

    def _run_version(self, path: str) -> str | None:
        detect = self.soft.detect
        args = detect.get("version_args")
        if args is None:
            args = ["--version"]
        if not args and not detect.get("version_regex"):
            return version_text(detect.get("version"))
        output = self.session.run([path, *args], timeout=float(detect.get("timeout", VERSION_TIMEOUT_S)),
                                  check=False)
        regex = detect.get("version_regex") or r"(\d+(?:\.\d+)+[\w.+-]*)"
        match = re.search(regex, output)
        if not match:
            raise _CandidateFailed(f"soft {self.soft.alias}: no version in the output of {path} "
                                   f"{' '.join(args)} (regex {regex!r})")
        return match.groupdict().get("version") or (match.group(1) if match.groups() else match.group(0))

    # kind: marker -----------------------------------------------------------------------------
    def _marker_roots(self) -> tuple[list[str], list[str]]:
        """(files given directly, directories to search)."""
        if self.full_path:
            path = os.path.abspath(os.path.expanduser(self.full_path))
            if os.path.isdir(path):
                return [], [path]
            return [path], []
        dirs = self.search_dirs or self.soft.detect.get("search_dirs") or []
        return [p for p in self.extra_candidates() if os.path.isfile(p)], _expand_dirs(dirs)

    def _markers(self) -> Iterator[tuple[str, Callable[[], _Found | None]]]:
        detect = self.soft.detect
        marker, *siblings = detect["files"]
        depth = self.search_depth if self.search_depth is not None else int(detect.get("depth", DEFAULT_MARKER_DEPTH))
        files, roots = self._marker_roots()
        hits: list[str] = []
        for path in files:
            if not os.path.isfile(path) or not _matches(os.path.basename(path), marker.split("|")):
                self.ctx.warn(f"soft {self.soft.alias}: {path} is not a {marker} file")
                continue
            hits.append(path)
        for root in roots:
            hits.extend(self._walk(root, marker, depth))
        if self.full_path is None and not roots and not files:
            return
        for hit in dict.fromkeys(hits):
            directory = os.path.dirname(hit)
            missing = [s for s in siblings if not os.path.exists(os.path.join(directory, s))]
            if missing:
                self.ctx.warn(f"soft {self.soft.alias}: {directory} has {os.path.basename(hit)} but not "
                              + ", ".join(missing))
                continue

            def describe(hit: str = hit) -> _Found:
                hooked, version = self._version_from_hook(hit)
                if not hooked:
                    version = version_text(detect.get("version"))
                return _Found(full_path=hit, version=version, values={"dir": os.path.dirname(hit)})

            yield hit, describe

    def _walk(self, root: str, marker: str, depth: int) -> list[str]:
        """Marker files under ``root`` at most ``depth`` directory levels down (0: in ``root`` itself).

        Hidden directories are skipped, symlinked directories are followed once, a directory holding a
        plain (non-glob) marker is not searched further, and the walk stops (with a warning) after
        MAX_MARKER_DIRS directories.
        """
        alternatives = marker.split("|")
        pattern = len(alternatives) > 1 or any(c in marker for c in "*?[")
        hits: list[str] = []
        visited: set[str] = set()
        level = [root]
        for current_depth in range(depth + 1):
            following: list[str] = []
            for directory in level:
                real = os.path.realpath(directory)
                if real in visited:
                    continue
                visited.add(real)
                if len(visited) > MAX_MARKER_DIRS:
                    self.ctx.warn(f"soft {self.soft.alias}: stopped searching {root} after {MAX_MARKER_DIRS} "
                                  "directories; pass a narrower --search_dir")
                    return hits
                if pattern:
                    matched = sorted(n for n in self.session.listing(directory)
                                     if _matches(n, alternatives) and os.path.isfile(os.path.join(directory, n)))
                    found_here = [os.path.join(directory, n) for n in matched]
                else:
                    candidate = os.path.join(directory, marker)
                    found_here = [candidate] if os.path.isfile(candidate) else []
                if found_here:
                    hits.extend(found_here)
                    if not pattern:
                        continue
                if current_depth == depth:
                    continue
                try:
                    with os.scandir(directory) as entries:
                        for entry in entries:
                            if entry.name.startswith(".") or entry.name == "__pycache__":
                                continue
                            try:
                                if entry.is_dir():
                                    following.append(entry.path)
                            except OSError:
                                continue
                except OSError:
                    continue
            level = sorted(following)
        return hits


def _matches(name: str, patterns: Sequence[str]) -> bool:
    """Whether a file name matches one of the marker's ``|``-separated glob patterns."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _metadata_version(path: Path) -> str | None:
    """The ``Version:`` header of a dist-info METADATA or egg-info PKG-INFO (or an egg-info file)."""
    candidates = [path / "METADATA", path / "PKG-INFO"] if path.is_dir() else [path]
    for candidate in candidates:
        try:
            with open(candidate, encoding="utf-8", errors="replace") as handle:
                for number, line in enumerate(handle):
                    if line.startswith("Version:"):
                        return line.split(":", 1)[1].strip() or None
                    if not line.strip() or number > 50:
                        break
        except OSError:
            continue
    return None


# -- public entry points -------------------------------------------------------------------------
def _python_for(ctx: Context, session: _Session, soft: SoftEntry, *, python: str | None,
                deps: Mapping[str, str]) -> EnvRecord:
    """The compiler.python env a module soft looks in: forced, given as a path, or resolved."""
    if deps.get("python"):
        return load_env(ctx, deps["python"])
    if python:
        envs = detect(ctx, "compiler.python", full_path=python, _session=session).envs
        if envs:
            return envs[0]
        raise NotFound(f"{python} is not a Python interpreter ckx can use")
    from ckx.software.resolve import resolve_deps

    spec = soft.meta.get("deps") or DEFAULT_PYTHON_DEP
    python_specs = {k: v for k, v in spec.items() if k == "python"} or DEFAULT_PYTHON_DEP
    resolved = resolve_deps(ctx, python_specs, forced=dict(deps), installed_only=True)
    return load_env(ctx, resolved[0].env_uid)


def detect(
    ctx: Context,
    soft: str | None = None,
    *,
    tags: str | Sequence[str] | None = None,
    full_path: str | os.PathLike | None = None,
    search_dirs: Sequence[str] | str = (),
    search_depth: int | None = None,
    force_version: str | None = None,
    extra_tags: Sequence[str] | str = (),
    python: str | None = None,
    deps: Mapping[str, str] | None = None,
    _session: _Session | None = None,
) -> DetectReport:
    """Detect with one soft entry (``soft``) or every soft that can provide ``tags``; record each instance.

    Returns a DetectReport whose envs carry the requested tags. Raises UsageError (neither soft nor
    tags), NotFound (nothing found; the hint says where to look), MetaError (a broken soft entry).
    """
    if not soft and not tags:
        raise UsageError("which software? give soft:ALIAS or --tags=...",
                         hint="ckx detect soft:compiler.python | ckx detect soft --tags=lib,python-package,numpy")
    outer = _session or _ACTIVE_SESSION.get()
    session = outer if outer is not None and outer.ctx is ctx else _Session(ctx)
    token = _ACTIVE_SESSION.set(session)  # nested detections (a module soft's python dep) share it
    try:
        return _detect(ctx, session, soft, tags=tags, full_path=full_path, search_dirs=search_dirs,
                       search_depth=search_depth, force_version=force_version, extra_tags=extra_tags,
                       python=python, deps=deps, outermost=session is not outer)
    finally:
        _ACTIVE_SESSION.reset(token)


def _detect(ctx: Context, session: _Session, soft: str | None, *, tags: Any, full_path: Any, search_dirs: Any,
            search_depth: int | None, force_version: str | None, extra_tags: Any, python: str | None,
            deps: Mapping[str, str] | None, outermost: bool) -> DetectReport:
    include, exclude = split_tags(tags)
    if soft:
        entry = get_soft(ctx, soft)
        if include and not entry.can_provide(include):
            raise UsageError(f"soft {entry.alias} cannot provide tags {','.join(include)} (its tags: "
                             f"{','.join(entry.tags)})")
        softs = [entry]
    else:
        softs = find_softs(ctx, tags)
        if not softs:
            raise NotFound(f"no soft entry can detect tags {','.join(include)}",
                           hint="'ckx search soft --tags=...' lists soft entries; 'ckx install package --tags=...' "
                                "installs packages")
    report = DetectReport(softs=[s.alias for s in softs])
    seen_uids: set[str] = set()
    searched: list[str] = []
    try:
        for entry in softs:
            python_env = None
            if entry.kind == "module":
                python_env = _python_for(ctx, session, entry, python=python, deps=deps or {})
            detector = _Detector(
                ctx, session, entry, full_path=str(full_path) if full_path else None,
                search_dirs=_split_list(search_dirs), search_depth=search_depth,
                force_version=version_text(force_version), extra_tags=_split_list(extra_tags), python_env=python_env,
            )
            searched.append(_where(entry, detector))
            for found in detector.detect():
                record, new = record_env_ex(
                    ctx, soft=entry.alias, version=found.version, full_path=found.full_path, env=found.env,
                    tags=list(entry.tags) + found.tags, extra_tags=detector.extra_tags,
                    env_prefix=entry.env_prefix, deps=found.deps, name=entry.name, detected_by=entry.kind,
                    extra_meta=found.extra_meta,
                )
                if record.uid in seen_uids:
                    continue
                seen_uids.add(record.uid)
                if all(t in record.tags for t in include) and not any(t in record.tags for t in exclude):
                    report.envs.append(record)
                    report.new.append(new)
    finally:
        if outermost:
            session.save_cache()
        report.subprocesses = session.subprocesses
    if not report.envs:
        what = f"soft {soft}" if soft else f"tags {tags if isinstance(tags, str) else ','.join(tags or ())}"
        raise NotFound(f"{what}: nothing found ({'; '.join(searched)})", hint=_hint(softs, tags))
    return report


def _where(entry: SoftEntry, detector: _Detector) -> str:
    kind = entry.kind
    if detector.full_path:
        return f"{entry.alias}: {detector.full_path}"
    if kind == "module":
        return f"{entry.alias}: module {entry.detect['module']} in {detector._python_path()}"
    if kind == "marker":
        dirs = detector.search_dirs or entry.detect.get("search_dirs") or []
        existing = [d for d in _expand_dirs(dirs) if os.path.isdir(d)]
        if not existing:
            return f"{entry.alias}: no search directory exists ({', '.join(dirs) or 'none given'})"
        return f"{entry.alias}: {entry.detect['files'][0]} under {', '.join(existing)}"
    if kind == "executable":
        return f"{entry.alias}: {', '.join(entry.detect['names'])} on PATH"
    return f"{entry.alias}: python interpreters"


def _hint(softs: Sequence[SoftEntry], tags: Any) -> str:
    kinds = {s.kind for s in softs}
    parts = []
    if "marker" in kinds:
        parts.append("pass --search_dir=DIR (and --search_depth=N) or --full_path=PATH")
    if "executable" in kinds or "python" in kinds:
        parts.append("pass --full_path=PATH if it is not on PATH")
    if "module" in kinds:
        parts.append("install it into that interpreter, pick another with --python=PATH, or "
                     "'ckx install package --tags=...'")
    return "; ".join(parts) or "'ckx install package --tags=...' installs packages"


def detect_soft(
    ctx: Context,
    soft: str | None = None,
    *,
    tags: str | Sequence[str] | None = None,
    full_path: str | os.PathLike | None = None,
    search_dirs: Sequence[str] | str = (),
    search_depth: int | None = None,
    force_version: str | None = None,
    extra_tags: Sequence[str] | str = (),
    python: str | None = None,
    deps: Mapping[str, str] | None = None,
) -> list[EnvRecord]:
    """Detect and record; the envs found (see ``detect``). ``python`` is the interpreter module softs look in."""
    return detect(ctx, soft, tags=tags, full_path=full_path, search_dirs=search_dirs, search_depth=search_depth,
                  force_version=force_version, extra_tags=extra_tags, python=python, deps=deps).envs


def _int_option(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"--{name} must be a whole number, not {value!r}") from None
    if number < 0:
        raise UsageError(f"--{name} must not be negative")
    return number


def action_detect_soft(ctx: Context, inp: dict) -> dict:
    """``ckx detect soft[:ALIAS] [--tags=] [--full_path=] [--search_dir=] [--search_depth=] [--force_version=]
    [--extra_tags=] [--python=] [--deps.python=ENV_UID]``."""
    entry = inp.get("entry")
    if inp.get("repo") and entry:
        entry = f"{inp['repo']}:{entry}"
    full_path = inp.get("full_path")
    if full_path is True:
        raise UsageError("--full_path needs a value: --full_path=PATH")
    deps = inp.get("deps") if isinstance(inp.get("deps"), dict) else {}
    report = detect(
        ctx, entry, tags=inp.get("tags"), full_path=os.path.expanduser(full_path) if full_path else None,
        search_dirs=_split_list(inp.get("search_dir") or inp.get("search_dirs")),
        search_depth=_int_option(inp.get("search_depth"), "search_depth"),
        force_version=inp.get("force_version") if isinstance(inp.get("force_version"), str) else None,
        extra_tags=_split_list(inp.get("extra_tags")), python=inp.get("python") if isinstance(inp.get("python"), str) else None,
        deps={str(k): str(v) for k, v in deps.items()},
    )
    lines = []
    for record, new in zip(report.envs, report.new, strict=True):
        state = "recorded" if new else "already recorded"
        lines.append(f"{state} env {record.uid}: {record.soft} {record.version or '(no version)'} {record.full_path}")
    return {
        "return": 0, "envs": [dict(r.summary(), new=n) for r, n in zip(report.envs, report.new, strict=True)],
        "softs": report.softs, "subprocesses": report.subprocesses, "text": "\n".join(lines),
    }


__all__ = [
    "CUSTOMIZE",
    "HOOKS",
    "KINDS",
    "DetectReport",
    "Interpreter",
    "SoftEntry",
    "action_detect_soft",
    "detect",
    "detect_soft",
    "find_softs",
    "get_soft",
    "load_hooks",
    "load_soft",
]
