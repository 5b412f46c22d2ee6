"""The detectors of the four soft kinds: python interpreters, Python modules, executables and marker files."""
from __future__ import annotations

import fnmatch
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckx.core.errors import CkxError, MetaError
from ckx.software.environment import env_text, render_text
from ckx.software.envs import EnvRecord
from ckx.software.versions import compare_versions, version_text
from ckx.software.hooks import HookAborted, call_hook
from ckx.software.probing import VERSION_TIMEOUT_S, Session, _is_wrapper_script, _venv_root
from ckx.software.softs import CUSTOMIZE, SoftEntry
from ckx.store.context import Context

log = logging.getLogger(__name__)

DEFAULT_MARKER_DEPTH = 2
MAX_MARKER_DIRS = 50_000


class CandidateFailed(Exception):
    """One candidate could not be described; the message names the soft entry and the candidate."""


# -- what one candidate turned out to be ---------------------------------------------------------
@dataclass
class Found:
    full_path: str
    version: str | None
    values: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    deps: dict[str, str] = field(default_factory=dict)
    extra_meta: dict[str, Any] = field(default_factory=dict)


def expand_dirs(items: Iterable[str]) -> list[str]:
    out = []
    for item in items:
        text = os.path.expandvars(os.path.expanduser(str(item).strip()))
        if text and "$" not in text:
            out.append(os.path.abspath(text))
    return list(dict.fromkeys(out))


def split_list(value: Any) -> list[str]:
    """A list from a list, or from a comma/os.pathsep separated string (CLI values)."""
    if value is None or value is True or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if str(v).strip()]
    return [p for p in re.split(rf"[,{re.escape(os.pathsep)}]", str(value)) if p.strip()]


class Detector:
    def __init__(self, ctx: Context, session: Session, soft: SoftEntry, *, full_path: str | None,
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
        except HookAborted:
            raise  # a hook that tried to end ckx is a failure of the whole detection, not of one candidate
        except Exception as exc:  # noqa: BLE001 - a broken hook must not stop detection
            raise CandidateFailed(f"soft {self.soft.alias}: {CUSTOMIZE} {name}() failed for candidate "
                                   f"{candidate}: {type(exc).__name__}: {exc}") from None

    def _python_path(self) -> str | None:
        return self.python_env.full_path if self.python_env else None

    def extra_candidates(self) -> list[str]:
        try:
            result = self._hook("find_candidates", "(search)", meta=self.soft.meta, search_dirs=list(self.search_dirs),
                                depth=self.search_depth, python=self._python_path(), environ=dict(os.environ))
        except CandidateFailed as exc:
            self.ctx.warn(str(exc))
            return []
        if result is None:
            return []
        if isinstance(result, (str, os.PathLike)) or not isinstance(result, Iterable):
            self.ctx.warn(f"soft {self.soft.alias}: find_candidates() must return a list of paths; ignored")
            return []
        return [str(p) for p in result]

    # the run
    def detect(self) -> Iterator[Found]:
        kind = self.soft.kind
        produce = {"python": self._pythons, "module": self._modules, "executable": self._executables,
                   "marker": self._markers}[kind]
        for candidate, describe in produce():
            try:
                found = describe()
                if found is None:
                    continue
                yield self._finish(candidate, found)
            except CandidateFailed as exc:
                self.ctx.warn(str(exc))
            except CkxError as exc:
                if isinstance(exc, MetaError):
                    raise
                self.ctx.warn(f"soft {self.soft.alias}: skipped candidate {candidate}: {exc}")

    def _finish(self, candidate: str, found: Found) -> Found:
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
        values.setdefault("parent_dir", os.path.dirname(values["dir"]))  # CK's install path: /usr for /usr/bin/gcc
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
                raise CandidateFailed(f"soft {self.soft.alias}: setup_env() returned {type(extra).__name__}, "
                                       f"not a dict, for candidate {candidate}")
            env.update({str(k): env_text(v) for k, v in extra.items() if v is not None})
        tags = self._hook("extra_tags", candidate, full_path=Path(found.full_path), version=found.version,
                          meta=self.soft.meta, python=self._python_path())
        if tags is not None:
            if isinstance(tags, str) or not isinstance(tags, Iterable):
                raise CandidateFailed(f"soft {self.soft.alias}: extra_tags() must return a list of tags "
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
            raise CandidateFailed(f"soft {self.soft.alias}: detect_version() returned {type(result).__name__}, "
                                   f"not a string, for candidate {candidate}")
        return True, result

    # kind: python -----------------------------------------------------------------------------
    def _python_candidates(self) -> list[tuple[str, bool]]:
        if self.full_path:
            return [(self.full_path, True)]
        names = self.soft.detect.get("names") or ["python3", "python"]
        found: list[tuple[str, bool]] = []
        for directory in expand_dirs(self.search_dirs):
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

    def _pythons(self) -> Iterator[tuple[str, Callable[[], Found | None]]]:
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

            def describe(candidate: str = candidate) -> Found | None:
                interp = self.session.interpreter(candidate)
                post = (os.path.realpath(interp.executable), interp.prefix)
                if post in seen_post:
                    return None
                seen_post.add(post)
                hooked, version = self._version_from_hook(interp.executable)
                return Found(
                    full_path=interp.executable, version=version if hooked else interp.version,
                    values={"version_major_minor": interp.version_major_minor, "python_prefix": interp.prefix,
                            "python": interp.executable},
                    extra_meta={"python_prefix": interp.prefix, "python_implementation": interp.implementation,
                                "python_bits": interp.bits},
                )

            yield candidate, describe

    # kind: module -----------------------------------------------------------------------------
    def _modules(self) -> Iterator[tuple[str, Callable[[], Found | None]]]:
        if self.python_env is None or not self.python_env.full_path:
            raise CkxError(f"soft {self.soft.alias}: no Python interpreter to look in")
        python = self.python_env.full_path
        module = self.soft.detect["module"]

        def describe() -> Found | None:
            interp = self.session.interpreter(python)
            hit = self._explicit_module(module) if self.full_path else None
            if hit is None and self.full_path:
                raise CandidateFailed(f"soft {self.soft.alias}: {self.full_path} is not the module {module!r} "
                                       "nor a directory holding it")
            if hit is None:
                extra_dirs = expand_dirs(self.search_dirs + self.extra_candidates())
                hit = self._find_module(module, [*extra_dirs, *interp.path])
            if hit is None:
                return None
            site_dir, module_path = hit
            found = Found(full_path=module_path, version=None,
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
    def _executables(self) -> Iterator[tuple[str, Callable[[], Found | None]]]:
        detect = self.soft.detect
        names = detect["names"]
        candidates: list[str] = []
        if self.full_path:
            candidates.append(os.path.abspath(os.path.expanduser(self.full_path)))
        else:
            for directory in expand_dirs(self.search_dirs):
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

            def describe(candidate: str = candidate) -> Found | None:
                hooked, version = self._version_from_hook(candidate)
                if not hooked:
                    version = self._run_version(candidate)
                return Found(full_path=candidate, version=version, values={})

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
            raise CandidateFailed(f"soft {self.soft.alias}: no version in the output of {path} "
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
        return [p for p in self.extra_candidates() if os.path.isfile(p)], expand_dirs(dirs)

    def _markers(self) -> Iterator[tuple[str, Callable[[], Found | None]]]:
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

            def describe(hit: str = hit) -> Found:
                hooked, version = self._version_from_hook(hit)
                if not hooked:
                    version = version_text(detect.get("version"))
                return Found(full_path=hit, version=version, values={"dir": os.path.dirname(hit)})

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
