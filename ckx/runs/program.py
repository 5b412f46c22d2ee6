"""Running programs: resolve deps, assemble the environment, expand the argv, run it in a fresh run directory."""
from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Mapping, Sequence

from ckx.store.context import Context
from ckx.store.entry import normalise_tags
from ckx.core.errors import CkxError, DownloadError, MetaError, ProgramFailed, UsageError
from ckx.core.jsonio import read_json, write_json_atomic
from ckx.software.environment import env_text
from ckx.software.resolve import resolve_deps
from ckx.runs.program_entry import (MODULE, Program, assemble_env, build_command, choose_cmd_key, load_program,
                                    select_deps)
from ckx.transfer.fetch import offline_from_env

log = logging.getLogger(__name__)

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
