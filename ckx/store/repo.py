"""Repos: the native ckx format and CK's format, and the registry of repos in $CKX_HOME."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ckx.core.cid import is_uid, new_uid
from ckx.core.errors import MetaError, NotFound, UsageError
from ckx.core.home import BUILTIN_REPO_NAME, LOCAL_REPO_NAME, Home, builtin_repo_path
from ckx.core.jsonio import read_json, write_json_atomic

NATIVE_REPO_FILE = "ckx-repo.json"
CK_REPO_FILE = ".ckr.json"
REGISTRY_SCHEMA_VERSION = 1

# Directory names of the built-in kinds in native repos; any other module lives in a directory of its own name.
KIND_DIRS = {
    "package": "packages",
    "soft": "soft",
    "env": "envs",
    "program": "programs",
    "experiment": "experiments",
    "platform": "platforms",
    "venv": "venvs",
}
DIR_KINDS = {directory: kind for kind, directory in KIND_DIRS.items()}
BUILTIN_KINDS = tuple(KIND_DIRS)
META_NAMES = ("meta.json", "meta.yaml", "meta.yml")

# Well-known CK module uids, so CK-format entries ckx writes (zip, cp) carry the right provenance.
# Where a repo came from. Its standing in resolution follows: the built-in repo and the user's own repos
# (local, and those registered with ``add repo``) rank before repos that arrived from others.
ORIGINS = ("builtin", "local", "user", "pulled", "unzipped")
OWN_ORIGINS = ("builtin", "local", "user")
DEV_ENV = "CKX_DEV"

CK_MODULE_UIDS = {
    "package": "1dc07ee0f4742028",
    "soft": "5e1100048ab875d7",
    "env": "9b9b3208ac44b891",
    "program": "b0ac08fe1d3c2615",
    "experiment": "bc0409fb61f0aa82",
}


@dataclass(frozen=True)
class Repo:
    """One registered repo. ``format`` is "ckx" (native) or "ck" (CK's layout, read-only for entries)."""

    name: str
    path: Path
    format: str = "ckx"
    uid: str | None = None
    url: str | None = None
    deps: tuple[str, ...] = ()
    exclude_dirs: tuple[str, ...] = ()
    builtin: bool = False
    origin: str = "user"

    @property
    def writable(self) -> bool:
        """Entries may be written here: a native repo, and the built-in one only in development mode."""
        if self.format != "ckx":
            return False
        return not self.builtin or dev_mode()

    def read_only_reason(self) -> str | None:
        """Why entries cannot be written here (None when they can), in words for an error message."""
        if self.format != "ckx":
            return f"repo {self.name!r} is in CK's format, which ckx reads but does not write"
        if self.builtin and not dev_mode():
            return (f"repo {self.name!r} is the built-in repo (the ckx installation itself), which is read-only; "
                    f"set {DEV_ENV}=1 to change it while developing ckx")
        return None

    @property
    def standing(self) -> int:
        """0 for the built-in repo and the user's own repos, 1 for repos that came from others."""
        return 0 if self.origin in OWN_ORIGINS else 1

    @property
    def from_others(self) -> bool:
        """True for a repo pulled from a URL or unzipped from an archive: its content is data, not the user's."""
        return self.standing > 0

    def module_dir(self, module: str) -> Path:
        """Where entries of ``module`` live in this repo."""
        if self.format == "ck":
            return self.path / module
        return self.path / KIND_DIRS.get(module, module)

    def find_meta(self, entry_dir: Path) -> tuple[Path, os.stat_result] | None:
        """The meta file of an entry directory with its stat (one stat per candidate), or None.

        None too for a meta (or entry directory) that is a symlink leading outside this repo.
        """
        found = self.locate_meta(entry_dir)
        if found is None or found[2] is not None:
            return None
        return found[0], found[1]

    def locate_meta(self, entry_dir: Path, *, root: str | None = None, entry_is_link: bool | None = None
                    ) -> tuple[Path, os.stat_result, str | None] | None:
        """(meta path, its stat, why it is refused or None) of an entry directory; None without a meta.

        A meta, or an entry directory, that is a symlink resolving outside this repo is refused: the
        third item says so, naming both ends. ``root`` is this repo's real path (computed when not
        given), ``entry_is_link`` whether ``entry_dir`` is a symlink (looked up when not given).
        Raises OSError (PermissionError) for an entry directory that cannot be read.
        """
        names = (".cm/meta.json",) if self.format == "ck" else META_NAMES
        for name in names:
            candidate = entry_dir / name
            try:
                st = os.stat(candidate)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if stat.S_ISREG(st.st_mode):
                return candidate, st, self._link_out(entry_dir, candidate, root, entry_is_link)
        return None

    def _link_out(self, entry_dir: Path, meta: Path, root: str | None, entry_is_link: bool | None) -> str | None:
        if entry_is_link is None:
            entry_is_link = os.path.islink(entry_dir)
        if entry_is_link:
            target = self.outside(entry_dir, root)
            if target is not None:
                return f"{entry_dir} is a symlink to {target}, outside repo {self.name}"
        if os.path.islink(meta) or (self.format == "ck" and os.path.islink(entry_dir / ".cm")):
            target = self.outside(meta, root)
            if target is not None:
                return f"{meta} is a symlink to {target}, outside repo {self.name}"
        return None

    def outside(self, path: Path, root: str | None = None) -> str | None:
        """The real path ``path`` leads to when that lies outside this repo (through symlinks); else None."""
        root = root if root is not None else os.path.realpath(self.path)
        real = os.path.realpath(path)
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            return None
        return real

    def check_inside(self, path: Path, what: str = "entry") -> None:
        """MetaError when ``path`` leads outside this repo through a symlink: ckx never follows one out."""
        target = self.outside(path)
        if target is not None:
            raise MetaError(f"{what} {path} is a symlink to {target}, outside repo {self.name}; ckx does not follow it",
                            hint="replace the link with the files themselves, or remove it")

    def module_dirs(self) -> list[tuple[str, Path]]:
        """Every (module, directory) pair this repo holds entries in.

        Raises OSError when the repo's directory is missing or cannot be read.
        """
        if self.format == "ck":
            return _ck_module_dirs(self.path)
        result = []
        children = sorted(os.scandir(self.path), key=lambda d: d.name)
        for child in children:
            name = child.name
            if name.startswith((".", "_")) or name in self.exclude_dirs or not child.is_dir():
                continue
            result.append((DIR_KINDS.get(name, name), Path(child.path)))
        return result

    def to_dict(self) -> dict:
        data = {"name": self.name, "path": str(self.path), "format": self.format}
        if self.uid:
            data["uid"] = self.uid
        if self.url:
            data["url"] = self.url
        if self.deps:
            data["deps"] = list(self.deps)
        if self.builtin:
            data["builtin"] = True
        data["origin"] = self.origin
        return data


def dev_mode() -> bool:
    """The development flag: ``CKX_DEV=1`` (or ``ckx --dev``) makes the built-in repo writable."""
    return os.environ.get(DEV_ENV, "") not in ("", "0")


def _ck_module_dirs(root: Path) -> list[tuple[str, Path]]:
    """Modules of a CK repo: those named by ``.cm/alias-a-*`` plus any directory that holds CK entries."""
    names: set[str] = set()
    cm = root / ".cm"
    try:
        for item in os.scandir(cm):
            if item.name.startswith("alias-a-"):
                names.add(item.name[len("alias-a-"):])
    except FileNotFoundError:
        pass
    for child in os.scandir(root):
        if child.is_dir() and not child.name.startswith(".") and (Path(child.path) / ".cm").is_dir():
            names.add(child.name)
    return [(name, root / name) for name in sorted(names) if (root / name).is_dir()]


def ck_entry_ids(module_dir: Path, dirname: str, meta_path: Path | None = None) -> tuple[str | None, str | None]:
    """(uid, alias) of a CK entry directory, from the module's alias files (or info.json as a fallback)."""
    cm = module_dir / ".cm"
    if is_uid(dirname):
        alias = _read_line(cm / f"alias-u-{dirname}")
        return dirname, alias
    uid = _read_line(cm / f"alias-a-{dirname}")
    if uid is None and meta_path is not None:
        try:
            info = read_json(meta_path.parent / "info.json")
            uid = info.get("backup_data_uid") if isinstance(info, dict) else None
        except (OSError, MetaError):
            uid = None
    return uid, dirname


def _read_line(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def detect_format(path: Path) -> str:
    """'ckx' for a native repo, 'ck' for a CK repo; UsageError for neither."""
    if (path / NATIVE_REPO_FILE).is_file():
        return "ckx"
    if (path / CK_REPO_FILE).is_file() or (path / ".cm").is_dir():
        return "ck"
    raise UsageError(
        f"{path} is not a repo: it has neither {NATIVE_REPO_FILE} nor {CK_REPO_FILE}",
        hint="create one with 'ckx add repo:NAME --path=DIR' on an empty or new directory",
    )


def read_repo_description(path: Path) -> dict:
    """The repo's own description file as a dict (native or CK), normalised to name/uid/url/deps."""
    fmt = detect_format(path)
    if fmt == "ckx":
        data = read_json(path / NATIVE_REPO_FILE)
        if not isinstance(data, dict):
            raise MetaError(f"{path / NATIVE_REPO_FILE}: the top level must be an object")
        return {
            "format": "ckx",
            "name": data.get("name"),
            "uid": data.get("uid"),
            "url": data.get("url"),
            "deps": [d if isinstance(d, str) else d.get("name") or d.get("repo_uoa") for d in data.get("deps", [])],
            "exclude_dirs": list(data.get("exclude_dirs", [])),
        }
    data = {}
    if (path / CK_REPO_FILE).is_file():
        data = read_json(path / CK_REPO_FILE)
    inner = data.get("dict", {}) if isinstance(data, dict) else {}
    return {
        "format": "ck",
        "name": data.get("data_uoa") or data.get("data_alias"),
        "uid": data.get("data_uid"),
        "url": inner.get("url"),
        "deps": [d.get("repo_uoa") for d in inner.get("repo_deps", []) if isinstance(d, dict) and d.get("repo_uoa")],
        "exclude_dirs": [],
    }


def init_native_repo(path: Path, name: str, uid: str, url: str | None = None) -> None:
    """Write ckx-repo.json into ``path`` (created if missing)."""
    path.mkdir(parents=True, exist_ok=True)
    data: dict = {"name": name, "uid": uid, "schema_version": 1}
    if url:
        data["url"] = url
    write_json_atomic(path / NATIVE_REPO_FILE, data)


@dataclass
class Registry:
    """The ordered set of repos: built-in first, then local, then registered ones in order of addition."""

    home: Home
    repos: dict[str, Repo] = field(default_factory=dict)

    @classmethod
    def load(cls, home: Home) -> "Registry":
        """Read ``repos.json``; create the local repo on first use."""
        registry = cls(home)
        builtin = builtin_repo_path()
        if (builtin / NATIVE_REPO_FILE).is_file():
            desc = read_repo_description(builtin)
            registry.repos[BUILTIN_REPO_NAME] = Repo(
                BUILTIN_REPO_NAME, builtin, "ckx", desc.get("uid"), desc.get("url"),
                exclude_dirs=tuple(desc.get("exclude_dirs", ())), builtin=True, origin="builtin",
            )
        if not (home.local_repo / NATIVE_REPO_FILE).is_file():
            init_native_repo(home.local_repo, LOCAL_REPO_NAME, new_uid())
        local_desc = read_repo_description(home.local_repo)
        registry.repos[LOCAL_REPO_NAME] = Repo(LOCAL_REPO_NAME, home.local_repo, "ckx", local_desc.get("uid"),
                                                origin="local")
        for name, item in registry._read_file().items():
            if name in registry.repos:
                continue
            registry.repos[name] = _repo_from_item(home.repos_json, name, item)
        return registry

    def _read_file(self) -> dict:
        path = self.home.repos_json
        if not path.is_file():
            return {}
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("repos", {}), dict):
            raise MetaError(f"{path}: expected an object with a 'repos' object")
        return data.get("repos", {})

    def save(self) -> None:
        """Write repos.json atomically (built-in and local are implicit and not stored)."""
        stored = {}
        for name, repo in self.repos.items():
            if name in (BUILTIN_REPO_NAME, LOCAL_REPO_NAME):
                continue
            item = repo.to_dict()
            item.pop("name")
            if repo.exclude_dirs:
                item["exclude_dirs"] = list(repo.exclude_dirs)
            stored[name] = item
        write_json_atomic(self.home.repos_json, {"schema_version": REGISTRY_SCHEMA_VERSION, "repos": stored})

    def get(self, name: str) -> Repo:
        """The repo called ``name`` (or whose uid is ``name``); NotFound lists the known ones."""
        repo = self.repos.get(name)
        if repo is None:
            for candidate in self.repos.values():
                if candidate.uid == name:
                    return candidate
            raise NotFound(
                f"repo {name!r} is not registered",
                hint="known repos: " + ", ".join(self.repos) + "; add one with 'ckx add repo:NAME --path=DIR'",
            )
        return repo

    def __iter__(self) -> Iterator[Repo]:
        return iter(list(self.repos.values()))

    def register(self, repo: Repo) -> None:
        """Add ``repo`` and save, under the registry lock."""
        from filelock import FileLock  # lazily: only writes to the registry lock; searches stay light

        with FileLock(str(self.home.locks / "registry.lock"), timeout=60):
            fresh = Registry.load(self.home)
            if repo.name in fresh.repos:
                raise UsageError(f"repo {repo.name!r} is already registered at {fresh.repos[repo.name].path}")
            fresh.repos[repo.name] = repo
            fresh.save()
            self.repos = fresh.repos

    def unregister(self, name: str) -> Repo:
        """Remove ``name`` from the registry and save; the files stay."""
        if name in (BUILTIN_REPO_NAME, LOCAL_REPO_NAME):
            raise UsageError(f"repo {name!r} is part of every ckx home and cannot be removed")
        from filelock import FileLock  # lazily: only writes to the registry lock; searches stay light

        with FileLock(str(self.home.locks / "registry.lock"), timeout=60):
            fresh = Registry.load(self.home)
            repo = fresh.get(name)
            del fresh.repos[repo.name]
            fresh.save()
            self.repos = fresh.repos
        return repo


def _repo_from_item(path: Path, name: str, item: object) -> Repo:
    """One ``repos.json`` record as a Repo; a wrong-typed field is a MetaError naming the file and field."""
    where = f"{path}: repos.{name}"
    if not isinstance(item, dict):
        raise MetaError(f"{where}: expected an object, got {type(item).__name__}")

    def text(key: str, required: bool = False) -> str | None:
        value = item.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise MetaError(f"{where}.{key}: expected a non-empty string, got {value!r}"[:300])
        return value

    def strings(key: str) -> tuple[str, ...]:
        value = item.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise MetaError(f"{where}.{key}: expected a list of strings"[:300])
        return tuple(value)

    fmt = text("format") or "ckx"
    if fmt not in ("ckx", "ck"):
        raise MetaError(f"{where}.format: expected 'ckx' or 'ck', got {fmt!r}")
    url = text("url")
    origin = text("origin") or ("pulled" if url else "user")
    if origin not in ("user", "pulled", "unzipped"):
        raise MetaError(f"{where}.origin: expected one of user, pulled, unzipped, got {origin!r}")
    return Repo(name=name, path=Path(text("path", required=True)), format=fmt, uid=text("uid"), url=url,
                deps=strings("deps"), exclude_dirs=strings("exclude_dirs"), origin=origin)


def now_iso() -> str:
    """The current UTC time in ISO 8601, to the second."""
    import datetime as _dt  # lazily: only writes need it, and it costs start-up time on every search

    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
