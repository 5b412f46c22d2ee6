"""Running programs: resolve deps, assemble the environment, expand the argv, run it in a fresh run directory."""
from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Iterable, Mapping, Sequence

from ckx.core.cid import Cid
from ckx.store.context import Context
from ckx.store.entry import normalise_tags, validate_meta
from ckx.core.errors import CkxError, DownloadError, MetaError, ProgramFailed, UsageError
from ckx.store.index import EntryRecord, Query
from ckx.core.jsonio import read_json, write_json_atomic
from ckx.software.environment import apply_layer, env_text, render
from ckx.software.resolve import resolve_deps
from ckx.runs.ckprograms import ck_program_error
from ckx.store.generic import merged_meta, resolve_base, resolve_entry
from ckx.transfer.fetch import offline_from_env

log = logging.getLogger(__name__)

MODULE = "program"
RESULT_SCHEMA_VERSION = 1
DEFAULT_TIMEOUT_S = 24 * 3600.0
DEFAULT_RESULT_FILE = "result.json"
TAIL_LINES = 15


@dataclass(frozen=True)
class RunResult:
    """What one run of a program left behind.

    ``result`` is the program's result.json with the runner's ``run`` section added, or {} when the
    program wrote none (the run directory's result.json then holds only the ``run`` section).
    ``choices`` is what selected this run (program, command key, user env, dep narrowing, offline, deps).
    """

    run_dir: Path
    returncode: int
    result: dict
    choices: dict
    stdout_path: Path
    stderr_path: Path
    duration_s: float


@dataclass(frozen=True)
class Program:
    """A program entry with its base entries merged in; ``base_path`` is the root of its chain of bases."""

    record: EntryRecord
    meta: dict
    base_path: Path | None

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def path(self) -> Path:
        return self.record.path


@dataclass(frozen=True)
class Template:
    """The values argv and run_vars templates may use: fixed placeholders and the environment."""

    values: Mapping[str, str | None]
    env: Mapping[str, str]
    source: str = "program"
    missing: list[str] = field(default_factory=list)


# -- loading -------------------------------------------------------------------------------------
def load_program(ctx: Context, cid: str, *, cmd_key: str | None = None) -> Program:
    """The program named by ``cid`` (``NAME``, ``program:NAME`` or ``REPO:program:NAME``), base merged.

    A name several repos use resolves to the best-ranked entry (the built-in and the user's own before
    pulled ones, native before CK-format). Raises NotFound / Ambiguous for the name, UsageError for an
    abstract base entry or a CK-format program (naming the native program that does its job, with
    ``cmd_key`` in the suggested command), MetaError for a merged meta that fails the program schema.
    """
    parsed = Cid.parse(cid)
    if parsed.entry is None:
        parsed = Cid(module=MODULE, entry=parsed.module)
    if parsed.module != MODULE:
        raise UsageError(f"{cid!r} is not a program", hint="usage: ckx run program:NAME --cmd_key=KEY")
    record = resolve_entry(ctx, parsed)
    if record.ck_format:
        raise ck_program_error(ctx, record, cmd_key=cmd_key)
    meta = merged_meta(ctx, record)
    own = record.meta
    if own.get("abstract"):
        users = [r.name for r in ctx.index.query(Query(module=MODULE))
                 if r.meta.get("base") in (record.alias, record.uid)]
        raise UsageError(
            f"program {record.name} is a base entry shared by other programs; it does not run by itself",
            hint=("run one of: " + ", ".join(sorted(users))) if users else "run a program whose \"base\" it is",
        )
    meta.pop("abstract", None)
    validate_meta(meta, MODULE, f"{record.meta_path} (with its base entries merged)")
    base_path = None
    current = record
    for _ in range(32):  # merged_meta has already refused loops; this only walks to the root of the chain
        base = current.meta.get("base") or current.meta.get("_base_entry")
        if not base:
            break
        current = resolve_base(ctx, current, str(base))
        base_path = current.path
    return Program(record=record, meta=meta, base_path=base_path)


def command_keys(meta: Mapping[str, Any]) -> list[str]:
    """The command keys of a (merged) program meta, sorted."""
    return sorted((meta.get("run_cmds") or {}).keys())


def choose_cmd_key(ctx: Context, program: Program, cmd_key: str | None) -> str:
    """Check ``cmd_key``, or ask for one on a TTY; UsageError (exit 2) listing the keys otherwise."""
    keys = command_keys(program.meta)
    if not keys:
        raise MetaError(f"{program.record.meta_path}: field 'run_cmds': program {program.name} has no command keys")
    listing = ", ".join(keys)
    if cmd_key:
        if cmd_key not in keys:
            raise UsageError(f"program {program.name} has no command key {cmd_key!r}", hint=f"command keys: {listing}")
        return cmd_key
    if len(keys) == 1:
        return keys[0]
    if ctx.interactive:
        picked = ctx.reporter.choose(f"which command of {program.name}?", keys, None)
        if picked is not None and 0 <= picked < len(keys):
            return keys[picked]
    raise UsageError(
        f"program {program.name} needs --cmd_key",
        hint=f"command keys: {listing}; e.g. ckx run program:{program.name} --cmd_key={keys[0]}",
    )


# -- dependencies --------------------------------------------------------------------------------
def env_matches(condition: Mapping[str, Any], env: Mapping[str, str]) -> bool:
    """True when every ``VAR: wanted`` of ``condition`` holds in ``env``.

    ``wanted`` is a list of accepted values (or one value); ``true`` means set and non-empty,
    ``false`` means unset or empty.
    """
    for var, wanted in condition.items():
        value = env.get(var, "")
        if wanted is True:
            ok = value != ""
        elif wanted is False:
            ok = value == ""
        else:
            accepted = wanted if isinstance(wanted, list) else [wanted]
            ok = value in [env_text(a) for a in accepted]
        if not ok:
            return False
    return True


def merge_tags(tags: Any, add: Any) -> str:
    """``tags`` narrowed by ``add`` (comma lists); an added tag replaces its opposite (``x`` drops ``-x``)."""
    result = normalise_tags(tags)
    for tag in normalise_tags(add):
        opposite = tag[1:] if tag.startswith("-") else "-" + tag
        result = [t for t in result if t != opposite]
        if tag not in result:
            result.append(tag)
    return ",".join(result)


def select_deps(
    deps: Mapping[str, Any], config_env: Mapping[str, str], add_tags: Mapping[str, str], forced: Mapping[str, str],
    *, source: str,
) -> tuple[dict[str, dict], list[str]]:
    """The dependency specs this run needs, ready for the resolver, and the names left out.

    Deps set to null (a derived program dropping one) and deps whose ``enable_if_env`` does not hold in
    ``config_env`` are left out. ``add_tags`` narrows tags (see :func:`merge_tags`); a narrowed dep uses its
    main tags even under --offline, since the user has chosen. UsageError for unknown names.
    """
    known = sorted(name for name, spec in deps.items() if spec is not None)
    canonical = {name: name for name in known}
    for name in known:  # a dep's "names" are other names for it on the command line
        other = deps[name].get("names") or []
        for alias in [other] if isinstance(other, str) else other:
            canonical.setdefault(str(alias), name)
    for what, names in (("--dep_add_tags", add_tags), ("--deps", forced)):
        unknown = sorted(set(names) - set(canonical))
        if unknown:
            raise UsageError(f"{what}: {source} has no dependency {', '.join(unknown)}",
                             hint=f"its dependencies: {', '.join(known) or 'none'}")
    narrowing = {canonical[name]: tags for name, tags in add_tags.items() if tags}
    selected: dict[str, dict] = {}
    skipped: list[str] = []
    for name in known:
        spec = dict(deps[name])
        condition = spec.pop("enable_if_env", None)
        if condition and not env_matches(condition, config_env):
            skipped.append(name)
            continue
        if isinstance(spec.get("tags"), list):
            spec["tags"] = ",".join(normalise_tags(spec["tags"]))
        if isinstance(spec.get("offline_tags"), list):
            spec["offline_tags"] = ",".join(normalise_tags(spec["offline_tags"]))
        if isinstance(spec.get("skip_if_env"), str):
            spec["skip_if_env"] = [spec["skip_if_env"]]
        if narrowing.get(name):
            spec["tags"] = merge_tags(spec.get("tags"), narrowing[name])
            spec.pop("offline_tags", None)
        selected[name] = spec
    return selected, skipped


# -- environment ---------------------------------------------------------------------------------
# Layers merge by the one rule of ckx.software.environment (apply_layer), as install and virtual env do.


def assemble_env(
    base: Mapping[str, str], dep_envs: Iterable[Mapping[str, Any]], run_vars: Mapping[str, Any],
    key_vars: Mapping[str, Any], user_env: Mapping[str, Any], template: Template | None = None,
) -> dict[str, str]:
    """The environment of a run: ``base``, then each dep's env (in order), run_vars, the key's run_vars, --env.

    run_vars of the meta are templated (``{entry_path}``, ``{env:VAR}``, ...) against what came before;
    user values are taken literally.
    """
    env = dict(base)
    for dep_env in dep_envs:
        apply_layer(env, dep_env)
    for layer in (run_vars, key_vars):
        expanded: dict[str, Any] = {}
        for var, raw in layer.items():
            if isinstance(raw, str) and template is not None:
                expanded[var], _ = substitute(raw, Template(template.values, env, template.source))
            else:
                expanded[var] = raw
        apply_layer(env, expanded)
    apply_layer(env, user_env)
    return env


# -- argv templates ------------------------------------------------------------------------------
def substitute(text: str, template: Template) -> tuple[str, bool]:
    """Expand ``text``; returns (expanded, complete) where complete is False when an env reference was empty.

    ``{python}``, ``{entry_path}``, ``{base_path}``, ``{run_dir}``, ``{cache_dir}`` are placeholders;
    ``{env:VAR}``, ``$VAR`` and ``${VAR}`` read the environment; ``{{``, ``}}`` and ``$$`` are literal.
    MetaError (from the one placeholder engine, ckx.software.environment.render) for an unknown
    placeholder or one this program has no value for.
    """
    return render(text, template.values, where=template.source, env=template.env,
                  unavailable={"base_path": "the program has no base entry"})


def expand_argv(items: Sequence[Any], template: Template) -> list[str]:
    """The argv of a template list; items with an empty env reference are dropped.

    An item is a string, a list of strings (a group: kept or dropped whole, e.g. ``["--threads",
    "{env:MLPERF_THREADS}"]``) or ``{"argv": [...], "if_env": {VAR: [values]}}`` (kept when the env
    matches, as for a dep's enable_if_env). A string or group with any env reference that is unset or
    empty is left out, so optional options vanish cleanly; literal strings are always kept.
    """
    argv: list[str] = []
    for item in items:
        if isinstance(item, str):
            text, complete = substitute(item, template)
            if complete:
                argv.append(text)
            else:
                template.missing.append(item)
        elif isinstance(item, list):
            group = [substitute(str(part), template) for part in item]
            if all(complete for _, complete in group):
                argv.extend(text for text, _ in group)
            else:
                template.missing.append(" ".join(map(str, item)))
        elif isinstance(item, dict):
            condition = item.get("if_env") or {}
            if env_matches(condition, template.env):
                argv.extend(expand_argv(item.get("argv") or [], template))
        else:
            raise MetaError(f"{template.source}: field 'argv': item {item!r} is neither a string, a list nor an object")
    return argv


# -- running -------------------------------------------------------------------------------------
def new_run_dir(ctx: Context, program: Program) -> Path:
    """A fresh ``$CKX_HOME/runs/<program>/<UTC stamp>-<pid>/`` (never inside a repo checkout)."""
    root = ctx.home.runs / program.name
    try:
        root.resolve().relative_to(program.record.path.resolve().parent.parent)
        ctx.warn(f"runs go to {root}, inside the repo of {program.name}: set CKX_HOME outside any repo checkout")
    except ValueError:
        pass
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    for attempt in range(100):
        path = root / (f"{stamp}-{os.getpid()}" + (f"-{attempt}" if attempt else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise CkxError(f"cannot create a fresh run directory under {root}")


def _pump(stream: IO[bytes], log_file: IO[bytes], name: str, sink: Any, lock: threading.Lock) -> None:
    for raw in iter(stream.readline, b""):
        log_file.write(raw)
        log_file.flush()
        if sink is not None:
            with lock:
                sink(raw.decode("utf-8", errors="replace").rstrip("\r\n"), stream=name)
    stream.close()


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the program's process group, then kill it if it lingers."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def execute(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], stdout_path: Path, stderr_path: Path,
    sink: Any = None, timeout_s: float | None = None,
) -> tuple[int, bool]:
    """Run ``argv`` (no shell) in ``cwd``; save stdout/stderr to files and pass each line to ``sink``.

    Returns (return code, timed out). OSError when the executable cannot be started.
    A KeyboardInterrupt stops the program's whole process group before it propagates.
    """
    lock = threading.Lock()
    with open(stdout_path, "wb") as out_log, open(stderr_path, "wb") as err_log:
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
        )
        threads = [
            threading.Thread(target=_pump, args=(proc.stdout, out_log, "stdout", sink, lock), daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, err_log, "stderr", sink, lock), daemon=True),
        ]
        for thread in threads:
            thread.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop(proc)
        except BaseException:
            _stop(proc)
            raise
        finally:
            for thread in threads:
                thread.join(timeout=30)
    return proc.returncode, timed_out


def tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` non-blank lines of a text file (empty when it is missing)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def _python_of(resolved: Sequence[Any]) -> str:
    for dep in resolved:
        if getattr(dep, "soft", None) == "compiler.python" and getattr(dep, "full_path", None):
            return str(dep.full_path)
    return sys.executable


def _dep_record(dep: Any) -> dict:
    return {"env_uid": dep.env_uid, "soft": dep.soft, "version": dep.version, "tags": list(dep.tags or ()),
            "package": dep.package}


def _resolve(ctx: Context, specs: dict[str, dict], forced: Mapping[str, str], offline: bool) -> list[Any]:
    if not specs:
        return []
    return list(resolve_deps(ctx, specs, add_tags={}, forced=dict(forced), offline=offline))


def _read_result(ctx: Context, path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except MetaError as exc:
        ctx.warn(f"the program's {path.name} is unreadable, so it was replaced by the run's record: {exc}")
        return {}
    if not isinstance(data, dict):
        ctx.warn(f"the program's {path.name} is not a JSON object; it was replaced by the run's record")
        return {}
    return data


def build_command(
    program: Program, key: str, resolved: Sequence[Any], user_env: Mapping[str, str], *, run_dir: Path,
    cache_dir: Path, extra_args: Sequence[str] = (), base_env: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of one run of ``key``, given its resolved deps (anything with ``env``,
    ``soft`` and ``full_path``). MetaError for a bad template or an argv that expands to nothing."""
    meta = program.meta
    command = meta["run_cmds"][key] or {}
    source = f"program {program.name} ({program.record.meta_path})"
    values = {"python": _python_of(resolved), "entry_path": str(program.path),
              "base_path": str(program.base_path) if program.base_path else None,
              "run_dir": str(run_dir), "cache_dir": str(cache_dir)}
    full_env = assemble_env(os.environ if base_env is None else base_env, [dict(d.env or {}) for d in resolved],
                            meta.get("run_vars") or {}, command.get("run_vars") or {}, user_env,
                            Template(values, {}, source))
    full_env.update({"CKX_RUN_DIR": str(run_dir), "CKX_PROGRAM_PATH": str(program.path)})
    # Python programs: stream their output as it comes, and write no __pycache__ into the entry's directory.
    for var in ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"):
        full_env.setdefault(var, "1")
    argv_template = command.get("argv") or meta.get("argv")
    if not argv_template:
        raise MetaError(f"{source}: field 'argv': neither the command key {key!r} nor the program has an argv")
    template = Template(values, full_env, source)
    argv = expand_argv(argv_template, template) + [str(a) for a in extra_args]
    if not argv:
        raise MetaError(f"{source}: the argv of {key!r} expands to nothing")
    for item in template.missing:
        log.info("argv item %r left out: an environment variable in it is empty", item)
    return argv, full_env


def run_program(
    ctx: Context,
    cid: str,
    *,
    cmd_key: str | None,
    env: Mapping[str, Any] | None = None,
    dep_add_tags: Mapping[str, str] | None = None,
    deps: Mapping[str, str] | None = None,
    offline: bool = False,
    print_files: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    stream: bool = True,
    timeout_s: float | None = None,
) -> RunResult:
    """Run one command key of a program and return what it left behind.

    Resolves the program's deps (``dep_add_tags`` narrows them, ``deps`` forces env uids, ``offline``
    selects their offline tags and forbids downloads), assembles the environment (deps' env records,
    run_vars, the key's run_vars, then ``env``), expands the argv template (``extra_args`` appended), runs
    it without a shell in a fresh directory under ``$CKX_HOME/runs/<program>/``, streams its output to
    ``ctx.reporter.output`` (when ``stream``) while saving stdout.log and stderr.log, and writes
    result.json with a ``run`` section. ``print_files`` is checked here (names inside the run dir) and
    printed by the action. Raises UsageError (bad key or names), NotFound/Ambiguous (program),
    ResolutionError / DownloadError (deps), MetaError (template), ProgramFailed (non-zero exit, timeout).
    """
    user_env = {str(k): env_text(v) for k, v in (env or {}).items()}
    add_tags = {str(k): ",".join(normalise_tags(v)) for k, v in (dep_add_tags or {}).items()}
    forced = {str(k): str(v) for k, v in (deps or {}).items()}
    for name in print_files:
        _check_relative(name)
    program = load_program(ctx, cid, cmd_key=cmd_key)
    key = choose_cmd_key(ctx, program, cmd_key)
    resolved, skipped = resolve_program_deps(ctx, program, key, user_env=user_env, add_tags=add_tags, forced=forced,
                                             offline=offline)
    run_dir = new_run_dir(ctx, program)
    cache_dir = ctx.home.cache / "programs" / (program.base_path.name if program.base_path else program.name)
    try:
        argv, full_env = build_command(program, key, resolved, user_env, run_dir=run_dir, cache_dir=cache_dir,
                                       extra_args=extra_args)
    except CkxError:
        run_dir.rmdir()
        raise
    choices = {
        "program": program.name, "program_uid": program.record.uid, "cmd_key": key, "env": dict(user_env),
        "dep_add_tags": dict(add_tags), "offline": bool(offline),
        "deps": {dep.name: _dep_record(dep) for dep in resolved},
    }
    if extra_args:
        choices["extra_args"] = [str(a) for a in extra_args]
    command = program.meta["run_cmds"][key] or {}
    limit = timeout_s or float(command.get("timeout_s") or program.meta.get("timeout_s") or DEFAULT_TIMEOUT_S)
    ctx.info(f"running {program.name} --cmd_key={key} in {run_dir}")
    log.debug("argv: %s", argv)
    started, started_iso = time.time(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    stdout_path, stderr_path = run_dir / "stdout.log", run_dir / "stderr.log"
    try:
        returncode, timed_out = execute(argv, cwd=run_dir, env=full_env, stdout_path=stdout_path,
                                        stderr_path=stderr_path, sink=ctx.reporter.output if stream else None,
                                        timeout_s=limit)
    except OSError as exc:
        stderr_path.write_text(f"cannot start {argv[0]}: {exc.strerror or exc}\n", encoding="utf-8")
        raise ProgramFailed(
            f"program {program.name} ({key}) could not start {argv[0]!r}: {exc.strerror or exc}",
            hint=f"check the interpreter or executable its argv names; the run directory is {run_dir}",
        ) from None
    duration = time.time() - started
    run_section = {
        "program": program.name, "program_uid": program.record.uid, "program_path": str(program.path),
        "cmd_key": key, "argv": argv, "env": dict(user_env), "dep_add_tags": dict(add_tags), "offline": bool(offline),
        "deps": choices["deps"], "versions": {dep.name: dep.version for dep in resolved},
        "skipped_deps": skipped, "duration_s": round(duration, 3), "started": started_iso,
        "run_dir": str(run_dir), "returncode": returncode, "timed_out": timed_out,
    }
    result_name = str(command.get("result_file") or program.meta.get("result_file") or DEFAULT_RESULT_FILE)
    result = record_result(ctx, run_dir / _check_relative(result_name), run_section)
    if timed_out:
        raise ProgramFailed(
            f"program {program.name} ({key}) ran past its time limit of {limit:g} s and was stopped; "
            f"its output is in {stdout_path} and {stderr_path}",
            hint="raise the limit with --timeout=SECONDS, or shorten the run",
        )
    if returncode != 0:
        raise _failure(program.name, key, returncode, stdout_path, stderr_path)
    return RunResult(run_dir=run_dir, returncode=returncode, result=result, choices=choices,
                     stdout_path=stdout_path, stderr_path=stderr_path, duration_s=duration)


def resolve_program_deps(
    ctx: Context, program: Program, key: str, *, user_env: Mapping[str, str], add_tags: Mapping[str, str],
    forced: Mapping[str, str], offline: bool,
) -> tuple[list[Any], list[str]]:
    """The resolved deps of one run of ``key`` (in sort order) and the names its enable_if_env left out.

    A DownloadError gets a hint with the two ways forward (--local_path, or --offline).
    """
    meta = program.meta
    command = meta["run_cmds"][key] or {}
    config_env = assemble_env(os.environ, (), meta.get("run_vars") or {}, command.get("run_vars") or {}, user_env)
    all_deps = dict(meta.get("deps") or {})
    all_deps.update(command.get("deps") or {})
    specs, skipped = select_deps(all_deps, config_env, add_tags, forced, source=f"program {program.name}")
    for name in skipped:
        log.info("dependency %s of %s is not needed by this run (enable_if_env)", name, program.name)
    ignored = sorted(set(forced) & set(skipped))
    if ignored:
        ctx.warn(f"--deps.{ignored[0]} ignored: this run does not use that dependency (its enable_if_env is not met)")
        forced = {k: v for k, v in forced.items() if k not in skipped}
    try:
        return _resolve(ctx, specs, forced, offline), skipped
    except DownloadError as exc:
        exc.hint = _download_ways_forward(ctx, exc, program.name, key, offline, meta.get("short_run_env"))
        raise


def record_result(ctx: Context, path: Path, run_section: Mapping[str, Any]) -> dict:
    """Add the ``run`` section to the program's result file (written if the program made none).

    Returns the program's result with the section, or {} when the program wrote no (readable) result.
    """
    program_result = _read_result(ctx, path)
    written = dict(program_result)
    written.setdefault("schema_version", RESULT_SCHEMA_VERSION)
    written["run"] = dict(run_section)
    write_json_atomic(path, written)
    return written if program_result else {}


def _download_ways_forward(ctx: Context, exc: DownloadError, name: str, key: str, offline: bool,
                           short_env: Any = None) -> str:
    """The hint for a dependency that could not be downloaded: --local_path, or the embedded defaults.

    The installer names the package and variation on the error. A program's ``short_run_env`` (the
    --env values of a short run) is added to the suggested command, so that trying it is quick.
    """
    package, variation = getattr(exc, "package", None), getattr(exc, "variation", None)
    target = f"package:{package}" if package else "package:NAME"
    if variation:
        target += f" --variation={variation}"
    ways = [f"fetch the file by other means and install it with 'ckx install {target} --local_path=FILE' "
            "(its checksum is still verified), then run again"]
    if not offline:
        short = "".join(f" --env.{k}={shlex.quote(str(v))}" for k, v in sorted((short_env or {}).items())
                        if isinstance(short_env, dict))
        ways.append(f"use the embedded defaults, which need no download: add --offline "
                    f"(ckx run program:{name} --cmd_key={key} --offline{short})")
    return "; or ".join(ways)


def _failure(name: str, key: str, returncode: int, stdout_path: Path, stderr_path: Path) -> ProgramFailed:
    lines, log_path = tail(stderr_path), stderr_path
    if not lines:
        lines, log_path = tail(stdout_path), stdout_path
    how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"
    message = f"program {name} ({key}) {how}; see {log_path}"
    if lines:
        message += "\nlast lines of " + log_path.name + ":\n" + "\n".join("  " + line for line in lines)
    return ProgramFailed(message, hint=f"stdout.log and stderr.log are in {stderr_path.parent}")


def _check_relative(name: str) -> str:
    path = Path(name)
    if not name or path.is_absolute() or ".." in path.parts:
        raise UsageError(f"--print_files: {name!r} must be a file name inside the run directory")
    return name


def read_print_files(ctx: Context, run_dir: Path, names: Sequence[str]) -> dict[str, str]:
    """The text of each named file of a run directory; a missing one is a warning, not a failure."""
    texts: dict[str, str] = {}
    for name in names:
        path = run_dir / _check_relative(name)
        try:
            texts[name] = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            ctx.warn(f"--print_files: the run left no {name} in {run_dir}")
    return texts


# -- the action ----------------------------------------------------------------------------------
def action_run(ctx: Context, inp: dict) -> dict:
    """``ckx run program:NAME --cmd_key=KEY [--env.VAR=V] [--dep_add_tags.DEP=t] [--deps.DEP=UID]
    [--offline] [--print_files=a,b] [--timeout=S] [-- extra args]``; ``inp`` holds the typed options."""
    name = inp.get("entry")
    if not name:
        raise UsageError("'run' needs a program", hint="usage: ckx run program:NAME --cmd_key=KEY ('ckx list program')")
    cid = f"{inp['repo']}:{MODULE}:{name}" if inp.get("repo") else f"{MODULE}:{name}"
    print_files = inp.get("print_files") or []
    offline = bool(inp.get("offline")) or offline_from_env()
    if offline:
        ctx.info("offline: no download and no pip install will run; dependencies take their offline tags")
    outcome = run_program(
        ctx, cid, cmd_key=inp.get("cmd_key") or None, env=dict(inp.get("env") or {}),
        dep_add_tags=dict(inp.get("dep_add_tags") or {}), deps=dict(inp.get("deps") or {}),
        offline=offline, print_files=print_files,
        extra_args=list(inp.get("rest") or []), stream=True, timeout_s=inp.get("timeout"),
    )
    files = read_print_files(ctx, outcome.run_dir, print_files)
    lines = []
    for file_name, text in files.items():
        lines += [f"--- {file_name}", text.rstrip("\n")]
    lines.append(f"run directory: {outcome.run_dir} ({outcome.duration_s:.1f} s)")
    return {
        "return": 0, "run_dir": str(outcome.run_dir), "returncode": outcome.returncode, "result": outcome.result,
        "choices": outcome.choices, "stdout": str(outcome.stdout_path), "stderr": str(outcome.stderr_path),
        "duration_s": round(outcome.duration_s, 3), "files": files, "text": "\n".join(lines),
    }
