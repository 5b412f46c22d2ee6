"""The SQLite index of every registered repo: uid, alias, module, tags, version, path and meta."""
from __future__ import annotations

import json
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Sequence

from ckx.core.cid import has_wildcard, is_uid
from ckx.core.errors import MetaError
from ckx.core.home import Home
from ckx.core.jsonio import read_meta_file
from ckx.core.limits import home_limits
from ckx.store.repo import Registry, Repo, ck_entry_ids
from ckx.store.stamps import ModuleStamps, Stamp, stamp_of

log = logging.getLogger(__name__)

INDEX_SCHEMA_VERSION = 7
SCHEMA = """
CREATE TABLE IF NOT EXISTS info(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS repos(name TEXT PRIMARY KEY, path TEXT NOT NULL, format TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS moddirs(
    repo TEXT NOT NULL, module TEXT NOT NULL, path TEXT NOT NULL, mtime_ns INTEGER NOT NULL,
    PRIMARY KEY (repo, module));
CREATE TABLE IF NOT EXISTS entries(
    id INTEGER PRIMARY KEY,
    repo TEXT NOT NULL, module TEXT NOT NULL, dirname TEXT NOT NULL,
    uid TEXT, alias TEXT, path TEXT NOT NULL, meta_path TEXT NOT NULL,
    mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, size INTEGER NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]', version TEXT, meta TEXT, error TEXT,
    UNIQUE (repo, module, dirname));
CREATE INDEX IF NOT EXISTS entries_uid ON entries(uid);
CREATE INDEX IF NOT EXISTS entries_alias ON entries(alias);
CREATE INDEX IF NOT EXISTS entries_module ON entries(module);
-- The freshness check of one module reads one row: every entry's id, meta path and stamp (see stamps.py).
CREATE TABLE IF NOT EXISTS stamps(
    repo TEXT NOT NULL, module TEXT NOT NULL, ids BLOB NOT NULL, names TEXT NOT NULL, stamps BLOB NOT NULL,
    PRIMARY KEY (repo, module));
-- Unreadable metas are reported on every refresh: find them without scanning every row.
CREATE INDEX IF NOT EXISTS entries_errors ON entries(module) WHERE error IS NOT NULL;
CREATE TABLE IF NOT EXISTS tags(tag TEXT NOT NULL, entry INTEGER NOT NULL, module TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tags_tag ON tags(tag, module, entry);
CREATE INDEX IF NOT EXISTS tags_entry ON tags(entry);
CREATE TABLE IF NOT EXISTS names(name TEXT NOT NULL, entry INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS names_name ON names(name);
CREATE INDEX IF NOT EXISTS names_entry ON names(entry);
"""


@dataclass(frozen=True)
class EntryRecord:
    """One indexed entry. ``meta`` is the parsed meta as it was when indexed."""

    repo: str
    module: str
    uid: str | None
    alias: str | None
    path: Path
    meta_path: Path
    tags: tuple[str, ...]
    version: str | None
    meta_text: str

    @property
    def name(self) -> str:
        """The alias when there is one, else the uid."""
        return self.alias or self.uid or self.path.name

    @property
    def cid(self) -> str:
        return f"{self.repo}:{self.module}:{self.name}"

    @property
    def ck_format(self) -> bool:
        """True for an entry in CK's layout (its meta is ``.cm/meta.json``), which ckx reads but may not run."""
        return self.meta_path.parent.name == ".cm"

    @property
    def meta(self) -> dict:
        return json.loads(self.meta_text) if self.meta_text else {}

    def summary(self) -> dict:
        """The JSON form used in search/list results."""
        return {
            "repo": self.repo,
            "module": self.module,
            "uid": self.uid,
            "alias": self.alias,
            "cid": self.cid,
            "path": str(self.path),
            "tags": list(self.tags),
            "version": self.version,
        }


@dataclass(frozen=True)
class Query:
    """What to look for. Every field is optional; ``tags`` must all be present, ``exclude_tags`` none."""

    module: str | None = None
    repo: str | None = None
    name: str | None = None  # alias or uid, wildcards allowed
    tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()
    # Each must be one of the entry's tags or occur in its meta text (where a variation's tags, names and
    # versions are), or the entry must name a base it may inherit tags from: a cheap superset that the
    # caller narrows by reading the metas it returns.
    loose_tags: tuple[str, ...] = ()


def split_tags(text: str | Sequence[str] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``"a,b,-c"`` -> (("a", "b"), ("c",)): CK's tag list with ``-tag`` exclusion."""
    if text is None:
        return (), ()
    items = text.split(",") if isinstance(text, str) else list(text)
    include: list[str] = []
    exclude: list[str] = []
    for raw in items:
        tag = str(raw).strip()
        if not tag:
            continue
        if tag.startswith("-") and len(tag) > 1:
            exclude.append(tag[1:])
        else:
            include.append(tag)
    return tuple(dict.fromkeys(include)), tuple(dict.fromkeys(exclude))


class Index:
    """An incremental SQLite index over the registry's repos.

    Refreshing compares each module directory's mtime (entries added, removed or renamed) and each
    meta file's mtime and size (hand edits), and re-reads only what changed. Writers take a file lock
    and use WAL, so two ckx processes can refresh and write at the same time.
    """

    def __init__(self, home: Home, registry: Registry, *, warn: Callable[[str], None] | None = None) -> None:
        self.home = home
        self.limits = home_limits(home.settings_path)  # meta size and depth bounds (settings.json)
        self.registry = registry
        self._warn = warn or (lambda message: log.warning(message))
        self._refreshed: set[str] | None = None  # modules refreshed in this process (None: not yet)
        self._refreshed_all = False
        home.ensure()
        self.db = self._connect()

    # -- connection and schema -------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        path = self.home.index_path
        try:
            db = self._open(path)
        except sqlite3.DatabaseError as exc:
            # A corrupt index is only a cache: rebuild it rather than fail.
            self._warn(f"index {path} is unreadable ({exc}); rebuilding it")
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.unlink(str(path) + suffix)
                except FileNotFoundError:
                    pass
            db = self._open(path)
        return db

    def _open(self, path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(str(path), timeout=60, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=60000")
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        if mode != "wal":
            with self._lock():
                db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        version = None
        try:
            row = db.execute("SELECT value FROM info WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else None
        except sqlite3.OperationalError:
            version = None
        if version != INDEX_SCHEMA_VERSION:
            with self._lock():
                db.execute("BEGIN IMMEDIATE")
                for table in ("info", "repos", "moddirs", "stamps", "entries", "tags", "names"):
                    db.execute(f"DROP TABLE IF EXISTS {table}")
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(
                    "INSERT OR REPLACE INTO info(key, value) VALUES('schema_version', ?)", (str(INDEX_SCHEMA_VERSION),)
                )
                db.execute("COMMIT")
        return db

    def _lock(self):
        from filelock import FileLock  # reason: only writers lock; a search that finds the index fresh never loads it

        self.home.locks.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.home.locks / "index.lock"), timeout=120)

    def expire(self) -> None:
        """Forget which modules were refreshed: the next query re-checks the disk."""
        self._refreshed = None
        self._refreshed_all = False

    def close(self) -> None:
        try:
            self.db.close()
        except sqlite3.Error:
            pass

    # -- refresh -----------------------------------------------------------------------------------
    def rebuild(self) -> dict:
        """Drop everything and index every repo from scratch. Returns counts."""
        with self._lock():
            self.db.execute("BEGIN IMMEDIATE")
            for table in ("repos", "moddirs", "stamps", "entries", "tags", "names"):
                self.db.execute(f"DELETE FROM {table}")
            self.db.execute("COMMIT")
        self._refreshed = None
        self._refreshed_all = False
        stats = self.refresh(force=True)
        return stats

    def refresh(self, modules: Iterable[str] | None = None, *, force: bool = False) -> dict:
        """Bring the index up to date with the disk, for ``modules`` (all when None).

        Each module is checked at most once per Index object unless ``force`` is set.
        Returns counts of entries added, updated and removed.
        """
        wanted = None if modules is None else set(modules)
        if not force:
            if self._refreshed_all:
                return {"added": 0, "updated": 0, "removed": 0}
            if wanted is not None and self._refreshed is not None and wanted <= self._refreshed:
                return {"added": 0, "updated": 0, "removed": 0}
        plan = self._plan(wanted)
        stats = {"added": 0, "updated": 0, "removed": 0}
        if plan.has_changes():
            stats = self._apply(plan)
        if wanted is None:
            self._refreshed_all = True
        else:
            self._refreshed = (self._refreshed or set()) | wanted
        self._report_errors(wanted)
        return stats

    def _report_errors(self, modules: set[str] | None) -> None:
        """Warn about every unreadable meta file in scope, each time: the user should fix it."""
        rows = self.db.execute("SELECT module, error FROM entries WHERE error IS NOT NULL").fetchall()
        for module, error in rows:
            if modules is None or module in modules:
                self._warn(f"skipped an entry whose meta file is unreadable or refused: {error}")

    def _plan(self, modules: set[str] | None) -> "_Plan":
        """Compare the disk with the index (reads only: no lock held)."""
        plan = _Plan()
        known_repos = {row[0]: (row[1], row[2]) for row in self.db.execute("SELECT name, path, format FROM repos")}
        live = {repo.name: repo for repo in self.registry}
        for name in known_repos:
            if name not in live:
                plan.drop_repos.append(name)
        for repo in live.values():
            if known_repos.get(repo.name) != (str(repo.path), repo.format):
                if repo.name in known_repos:
                    plan.drop_repos.append(repo.name)
                plan.new_repos.append(repo)
                self._plan_repo(repo, modules, plan, fresh=True)
            else:
                self._plan_repo(repo, modules, plan, fresh=False)
        return plan

    def _plan_repo(self, repo: Repo, modules: set[str] | None, plan: "_Plan", *, fresh: bool) -> None:
        indexed_dirs: dict[str, tuple[str, int]] = {}
        if not fresh:
            for module, path, mtime in self.db.execute(
                "SELECT module, path, mtime_ns FROM moddirs WHERE repo=?", (repo.name,)
            ):
                indexed_dirs[module] = (path, mtime)
        try:
            live_dirs = repo.module_dirs()
        except OSError as exc:
            # One repo that cannot be read must not take the others down: warn, and leave its entries out.
            self._warn(f"repo {repo.name} at {repo.path} cannot be read ({exc.strerror or exc}); its entries are left out")
            live_dirs = []
        root = os.path.realpath(repo.path)
        inside = []
        for module, module_dir in live_dirs:
            target = repo.outside(module_dir, root) if os.path.islink(module_dir) else None
            if target is not None:
                self._warn(f"skipped {module_dir}: it is a symlink to {target}, outside repo {repo.name}")
            else:
                inside.append((module, module_dir))
        live_dirs = inside
        live_modules = {module for module, _ in live_dirs}
        for module in indexed_dirs:
            if module not in live_modules and (modules is None or module in modules):
                plan.drop_modules.append((repo.name, module))
        for module, module_dir in live_dirs:
            if modules is not None and module not in modules:
                continue
            try:
                dir_mtime = os.stat(module_dir).st_mtime_ns
            except FileNotFoundError:
                continue
            except OSError as exc:
                self._warn(f"skipped {module_dir} of repo {repo.name}: {exc.strerror or exc}")
                continue
            stamps = None if fresh else self._stamps(repo.name, module)
            if stamps is not None and indexed_dirs.get(module) == (str(module_dir), dir_mtime):
                self._plan_stamps(repo, root, module, module_dir, stamps, plan)
                continue
            plan.moddirs.append((repo.name, module, str(module_dir), dir_mtime))
            plan.touched.add((repo.name, module))
            indexed = {} if fresh else self._indexed(repo.name, module)
            self._plan_listing(repo, root, module, module_dir, indexed, plan)

    def _stamps(self, repo: str, module: str) -> ModuleStamps | None:
        """The stamps of one module as last indexed; None when missing or unreadable (then list it again)."""
        row = self.db.execute("SELECT ids, names, stamps FROM stamps WHERE repo=? AND module=?",
                              (repo, module)).fetchone()
        if row is None:
            return None
        try:
            return ModuleStamps.decode(*row)
        except (TypeError, ValueError):
            return None

    def _indexed(self, repo: str, module: str) -> dict[str, tuple[int, Stamp, str]]:
        """dirname -> (row id, stamp, meta path) of every indexed entry of one module."""
        rows = self.db.execute(
            "SELECT id, dirname, mtime_ns, ctime_ns, size, meta_path FROM entries WHERE repo=? AND module=?",
            (repo, module),
        )
        return {dirname: (row_id, (mtime, ctime, size), meta_path)
                for row_id, dirname, mtime, ctime, size, meta_path in rows}

    def _locate(self, repo: Repo, root: str, entry_dir: Path, is_link: bool | None
                ) -> tuple[Path, os.stat_result, str | None] | None:
        """The entry's meta (see Repo.locate_meta); an entry directory that cannot be read is a warning."""
        try:
            return repo.locate_meta(entry_dir, root=root, entry_is_link=is_link)
        except OSError as exc:
            self._warn(f"skipped {entry_dir} of repo {repo.name}: {exc.strerror or exc}")
            return None

    def _plan_listing(self, repo: Repo, root: str, module: str, module_dir: Path, indexed: dict, plan: "_Plan") -> None:
        """The module directory changed: compare its listing, then stat every meta file.

        A meta or an entry directory that is a symlink leading out of the repo becomes a row with an
        error (reported on every refresh, never listed or loaded).
        """
        seen: set[str] = set()
        try:
            children = [(d.name, d.is_symlink()) for d in os.scandir(module_dir)
                        if not d.name.startswith(".") and d.is_dir()]
        except FileNotFoundError:
            children = []
        except OSError as exc:
            self._warn(f"skipped {module_dir} of repo {repo.name}: {exc.strerror or exc}; its entries are left out")
            children = []
        for dirname, is_link in children:
            entry_dir = module_dir / dirname
            found = self._locate(repo, root, entry_dir, is_link)
            if found is None:
                continue
            meta_path, st, refused = found
            seen.add(dirname)
            known = indexed.get(dirname)
            if known is None or (known[1], known[2]) != (stamp_of(st), str(meta_path)):
                plan.upserts.append((repo, module, dirname, entry_dir, meta_path, stamp_of(st), refused))
        for dirname, known in indexed.items():
            if dirname not in seen:
                plan.deletes.append(known[0])

    def _plan_stamps(self, repo: Repo, root: str, module: str, module_dir: Path, stamps: ModuleStamps,
                     plan: "_Plan") -> None:
        """The listing is unchanged: only meta files edited in place need re-reading (one stat each)."""
        changed = stamps.changed(str(module_dir))
        if changed:
            plan.touched.add((repo.name, module))
        for position in changed:
            dirname = stamps.names[position].split("/", 1)[0]
            entry_dir = module_dir / dirname
            # Read the meta file again, or the one that replaced it (meta.json -> meta.yaml), or drop the row.
            found = self._locate(repo, root, entry_dir, None)
            if found is None:
                plan.deletes.append(stamps.ids[position])
            else:
                meta_path, st, refused = found
                plan.upserts.append((repo, module, dirname, entry_dir, meta_path, stamp_of(st), refused))

    def _apply(self, plan: "_Plan") -> dict:
        parsed = [self._parse(*item) for item in plan.upserts]
        stats = {"added": 0, "updated": 0, "removed": len(plan.deletes)}
        with self._lock():
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                for name in plan.drop_repos:
                    self._delete_where("repo=?", (name,))
                    db.execute("DELETE FROM moddirs WHERE repo=?", (name,))
                    db.execute("DELETE FROM stamps WHERE repo=?", (name,))
                    db.execute("DELETE FROM repos WHERE name=?", (name,))
                for repo in plan.new_repos:
                    db.execute(
                        "INSERT OR REPLACE INTO repos(name, path, format) VALUES(?,?,?)",
                        (repo.name, str(repo.path), repo.format),
                    )
                for repo_name, module in plan.drop_modules:
                    self._delete_where("repo=? AND module=?", (repo_name, module))
                    db.execute("DELETE FROM moddirs WHERE repo=? AND module=?", (repo_name, module))
                    db.execute("DELETE FROM stamps WHERE repo=? AND module=?", (repo_name, module))
                for row_id in plan.deletes:
                    db.execute("DELETE FROM tags WHERE entry=?", (row_id,))
                    db.execute("DELETE FROM names WHERE entry=?", (row_id,))
                    db.execute("DELETE FROM entries WHERE id=?", (row_id,))
                for row in parsed:
                    stats["updated" if self._write_row(row) else "added"] += 1
                for repo_name, module, path, mtime in plan.moddirs:
                    db.execute(
                        "INSERT OR REPLACE INTO moddirs(repo, module, path, mtime_ns) VALUES(?,?,?,?)",
                        (repo_name, module, path, mtime),
                    )
                for repo_name, module in plan.touched:
                    self._write_stamps(repo_name, module)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return stats

    def _write_row(self, row: "_Row") -> bool:
        """Insert or update one entry with its tags and extra names; True when it was already indexed."""
        db = self.db
        existing = db.execute(
            "SELECT id FROM entries WHERE repo=? AND module=? AND dirname=?", (row.repo, row.module, row.dirname)
        ).fetchone()
        values = (row.uid, row.alias, row.path, row.meta_path, *row.stamp, row.tags, row.version, row.meta,
                  row.error)
        if existing:
            row_id = existing[0]
            db.execute("DELETE FROM tags WHERE entry=?", (row_id,))
            db.execute("DELETE FROM names WHERE entry=?", (row_id,))
            db.execute(
                "UPDATE entries SET uid=?, alias=?, path=?, meta_path=?, mtime_ns=?, ctime_ns=?, size=?, tags=?,"
                " version=?, meta=?, error=? WHERE id=?",
                (*values, row_id),
            )
        else:
            row_id = db.execute(
                "INSERT INTO entries(repo, module, dirname, uid, alias, path, meta_path, mtime_ns, ctime_ns, size,"
                " tags, version, meta, error) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (row.repo, row.module, row.dirname, *values),
            ).lastrowid
        if row.error is None:
            db.executemany("INSERT INTO tags(tag, entry, module) VALUES(?,?,?)",
                           [(tag, row_id, row.module) for tag in json.loads(row.tags)])
            other_names = json.loads(row.meta).get("aliases", [])
            if isinstance(other_names, list):
                db.executemany("INSERT INTO names(name, entry) VALUES(?,?)", [(str(n), row_id) for n in other_names])
        return existing is not None

    def _write_stamps(self, repo: str, module: str) -> None:
        """Record the stamps of every indexed entry of one module, as the entries table now holds them."""
        rows = self.db.execute(
            "SELECT id, dirname, path, meta_path, mtime_ns, ctime_ns, size FROM entries WHERE repo=? AND module=?"
            " ORDER BY id",
            (repo, module),
        )
        stamps = ModuleStamps.from_rows(
            # The meta file lies in the entry directory: its path relative to the module directory.
            (row_id, dirname + meta_path[len(path):], (mtime, ctime, size))
            for row_id, dirname, path, meta_path, mtime, ctime, size in rows
        )
        self.db.execute("INSERT OR REPLACE INTO stamps(repo, module, ids, names, stamps) VALUES(?,?,?,?,?)",
                        (repo, module, *stamps.encode()))

    def _delete_where(self, condition: str, params: tuple) -> None:
        self.db.execute(f"DELETE FROM tags WHERE entry IN (SELECT id FROM entries WHERE {condition})", params)
        self.db.execute(f"DELETE FROM names WHERE entry IN (SELECT id FROM entries WHERE {condition})", params)
        self.db.execute(f"DELETE FROM entries WHERE {condition}", params)

    def _parse(self, repo: Repo, module: str, dirname: str, entry_dir: Path, meta_path: Path, stamp: Stamp,
               refused: str | None = None) -> "_Row":
        """Read one meta file into an entries row; a bad (or ``refused``) file becomes a row with ``error`` set."""
        error = refused
        meta: dict = {}
        if refused is None:
            try:
                meta = read_meta_file(meta_path, limits=self.limits)
            except MetaError as exc:
                error = str(exc)
            except OSError as exc:
                error = f"{meta_path}: {exc.strerror}"
        if repo.format == "ck":
            uid, alias = ck_entry_ids(entry_dir.parent, dirname, meta_path)
        else:
            uid = meta.get("uid") if isinstance(meta.get("uid"), str) else None
            alias = meta.get("alias") if isinstance(meta.get("alias"), str) else None
            if alias is None and not is_uid(dirname):
                alias = dirname
            if uid is None and is_uid(dirname):
                uid = dirname
        tags = meta.get("tags", [])
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.split(",") if t.strip()]
        if not isinstance(tags, list):
            error = error or f"{meta_path}: field 'tags' must be a list of strings"
            tags = []
        tags = [str(t) for t in tags]
        version = meta.get("version")
        if version is not None and not isinstance(version, str):
            version = ".".join(str(v) for v in version) if isinstance(version, list) else str(version)
        meta_text = json.dumps(meta, sort_keys=True) if error is None else None
        return _Row(repo.name, module, dirname, uid, alias, str(entry_dir), str(meta_path), stamp,
                    json.dumps(tags), version, meta_text, error)

    # -- queries -----------------------------------------------------------------------------------
    def modules(self) -> list[str]:
        """Every module that has at least one indexed entry (after a full refresh)."""
        self.refresh()
        return [row[0] for row in self.db.execute("SELECT DISTINCT module FROM entries ORDER BY module")]

    def query(self, query: Query) -> list[EntryRecord]:
        """Entries matching ``query``, in registry order (built-in, local, others), then by name."""
        self.refresh(None if query.module is None else [query.module])
        sql = ["SELECT repo, module, uid, alias, path, meta_path, tags, version, meta FROM entries e WHERE error IS NULL"]
        params: list = []
        if query.module is not None:
            sql.append("AND module=?")
            params.append(query.module)
        if query.repo is not None:
            sql.append("AND repo=?")
            params.append(query.repo)
        if query.name is not None:
            if has_wildcard(query.name):
                sql.append("AND (alias GLOB ? OR uid GLOB ?)")
                params.extend([query.name, query.name])
            else:
                sql.append("AND (alias=? OR uid=? OR id IN (SELECT entry FROM names WHERE name=?))")
                params.extend([query.name, query.name, query.name])
        if query.tags:
            # Intersect the tag sets first (each an index range), then join: cheap at 50,000 entries.
            scope = " AND module=?" if query.module is not None else ""
            parts = []
            for tag in query.tags:
                parts.append(f"SELECT entry FROM tags WHERE tag=?{scope}")
                params.extend([tag, query.module] if scope else [tag])
            sql.append("AND id IN (" + " INTERSECT ".join(parts) + ")")
        for tag in query.exclude_tags:
            sql.append("AND id NOT IN (SELECT entry FROM tags WHERE tag=?)")
            params.append(tag)
        if query.loose_tags:
            loose = []
            for tag in query.loose_tags:
                loose.append("(id IN (SELECT entry FROM tags WHERE tag=?) OR instr(meta, ?) > 0)")
                params.extend([tag, tag])
            sql.append("AND (instr(meta, '\"base\"') > 0 OR instr(meta, '\"_base_entry\"') > 0 OR ("
                       + " AND ".join(loose) + "))")
        rows = self.db.execute(" ".join(sql), params).fetchall()
        order = {name: i for i, name in enumerate(self.registry.repos)}
        records = [
            EntryRecord(r[0], r[1], r[2], r[3], Path(r[4]), Path(r[5]), tuple(json.loads(r[6])), r[7], r[8] or "")
            for r in rows
        ]
        records.sort(key=lambda rec: (order.get(rec.repo, len(order)), rec.module, rec.name))
        return records

    def tag_counts(self, module: str | None = None) -> dict[str, int]:
        """Every tag with the number of entries carrying it."""
        self.refresh(None if module is None else [module])
        if module is None:
            rows = self.db.execute("SELECT tag, COUNT(*) FROM tags GROUP BY tag")
        else:
            rows = self.db.execute("SELECT tag, COUNT(*) FROM tags WHERE module=? GROUP BY tag", (module,))
        return dict(sorted(rows))

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM entries WHERE error IS NULL").fetchone()[0]


class _Plan:
    """Changes found by comparing the disk with the index."""

    def __init__(self) -> None:
        self.drop_repos: list[str] = []
        self.new_repos: list[Repo] = []
        self.drop_modules: list[tuple[str, str]] = []
        self.moddirs: list[tuple[str, str, str, int]] = []
        self.upserts: list[tuple[Repo, str, str, Path, Path, Stamp, str | None]] = []
        self.deletes: list[int] = []
        self.touched: set[tuple[str, str]] = set()  # (repo, module) whose stamps must be written again

    def has_changes(self) -> bool:
        return bool(self.drop_repos or self.new_repos or self.drop_modules or self.moddirs or self.upserts or self.deletes)


class _Row(NamedTuple):
    """One meta file as an entries row."""

    repo: str
    module: str
    dirname: str
    uid: str | None
    alias: str | None
    path: str
    meta_path: str
    stamp: Stamp
    tags: str  # JSON list
    version: str | None
    meta: str | None  # JSON object; None when unreadable
    error: str | None
