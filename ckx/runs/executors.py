"""Where a sweep's combinations run: here, one at a time (local), or one per node of a Ray cluster (ray).

Both executors yield one ``Outcome`` per combination as soon as it finishes, so the driver records it at
once and a sweep killed half-way keeps what it finished. A benchmark must not share its machine, so each
Ray task holds a whole node: the custom resource ``NODE_RESOURCE``, which every node offers once.
"""
from __future__ import annotations

import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ckx.core.errors import CkxError, UsageError
from ckx.runs.benchmark import run_repetitions
from ckx.runs.experiment import Repetition, platform_features
from ckx.runs.sweep import Combination
from ckx.store.context import Context

NODE_RESOURCE = "ckx_node"  # each node offers it once: `ray start ... --resources='{"ckx_node": 1}'`
RESULT_FILE = "result.json"
MAX_FILE_BYTES = 16 * 1024 * 1024  # a result file larger than this stays on the node
LOG_TAIL_LINES = 20
TASK_RETRIES = 2  # Ray re-runs a combination whose node was lost this many times


@dataclass
class Outcome:
    """What running one combination gave: repetitions to record, or a failure."""

    combination: Combination
    choices: dict = field(default_factory=dict)
    repetitions: list[Repetition] = field(default_factory=list)
    features: dict = field(default_factory=dict)
    node: str | None = None
    failure: dict | None = None  # message, log_tail, node

    @property
    def ok(self) -> bool:
        return self.failure is None and bool(self.repetitions)


@dataclass(frozen=True)
class RunSettings:
    """The benchmark inputs every combination shares."""

    program: str  # the CID as given: program:NAME or REPO:program:NAME
    repetitions: int
    offline: bool
    print_files: tuple[str, ...]
    timeout_s: float | None


def log_tail(message: str) -> str:
    """The program's last log lines that a ProgramFailed message quotes, else the message's last lines."""
    lines = message.splitlines()
    for number, line in enumerate(lines):
        if line.startswith("last lines of "):
            return "\n".join(item.strip() for item in lines[number + 1:])
    return "\n".join(lines[-LOG_TAIL_LINES:])


def _failure(message: str, node: str | None) -> dict:
    return {"message": message, "log_tail": log_tail(message), "node": node}


# -- local ---------------------------------------------------------------------------------------
class LocalExecutor:
    """One combination at a time on this machine, in this process."""

    name = "local"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def run(self, combos: Sequence[Combination], settings: RunSettings) -> Iterator[Outcome]:
        features = platform_features(self.ctx)
        for combo in combos:
            self.ctx.info(f"=== combination {combo.index}: {combo.label}")
            try:
                choices, reps, failure = run_repetitions(
                    self.ctx, settings.program, cmd_key=combo.cmd_key, repetitions=settings.repetitions,
                    env=combo.env, dep_add_tags=combo.dep_add_tags, deps=combo.deps, offline=settings.offline,
                    print_files=settings.print_files, extra_args=combo.extra_args, timers=True,
                    timeout_s=settings.timeout_s)
            except CkxError as exc:  # a dependency that does not resolve, a missing model: this combination's failure
                yield Outcome(combo, features=features, failure=_failure(exc.message, None))
                continue
            if failure is not None:
                yield Outcome(combo, choices, reps, features, failure=_failure(failure.message, None))
                continue
            yield Outcome(combo, choices, [_with_result_file(rep) for rep in reps], features)


def _with_result_file(rep: Repetition) -> Repetition:
    """The repetition with its run directory's result.json among the files kept."""
    if not rep.run_dir or any(name == RESULT_FILE for name, _ in rep.files):
        return rep
    path = Path(rep.run_dir) / RESULT_FILE
    files = rep.files + (((RESULT_FILE, path),) if path.is_file() else ())
    return Repetition(rep.characteristics, rep.run_dir, rep.started, rep.duration_s, files)


# -- on a node -----------------------------------------------------------------------------------
def node_name() -> str:
    """This node's host name and address, as a point records it."""
    host = socket.gethostname()
    ray = sys.modules.get("ray")  # inside a Ray worker: the node's address as the cluster knows it
    try:
        address = ray.util.get_node_ip_address() if ray is not None else socket.gethostbyname(host)
    except (OSError, AttributeError, RuntimeError):
        address = None
    return f"{host} ({address})" if address and address != host else host


def run_on_node(request: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``ckx benchmark`` for one combination on this node; return the point's parts and its result files.

    ``request`` holds the program, cmd_key, env, dep_add_tags, deps, extra_args, repetitions, offline,
    print_files and timeout. The repetitions run as ``ckx benchmark`` runs them (each a program process of
    its own), in this worker process, against this node's ckx, home (``CKX_HOME``) and repos; nothing is
    recorded here. The answer carries the choices, the repetitions (their characteristics, timings and
    files as bytes), this node's platform description and its name; or a failure with the log tail.
    """
    node = node_name()
    ctx = Context(quiet=True, interactive=False)  # this node's home: CKX_HOME or the default
    try:
        try:
            choices, reps, failure = run_repetitions(
                ctx, str(request["program"]), cmd_key=str(request["cmd_key"]),
                repetitions=int(request.get("repetitions") or 1), env=dict(request.get("env") or {}),
                dep_add_tags=dict(request.get("dep_add_tags") or {}), deps=dict(request.get("deps") or {}),
                offline=bool(request.get("offline")), print_files=list(request.get("print_files") or []),
                extra_args=[str(a) for a in request.get("extra_args") or []], timers=False,
                timeout_s=request.get("timeout"))
        except CkxError as exc:  # the program or a model missing here, a dependency that does not resolve
            failure = exc
            reps = []
        if failure is not None:
            return {"ok": False, "node": node, "failure": _failure(f"on node {node}: {failure.message}", node),
                    "features": platform_features(ctx)}
        answer = []
        for rep in reps:
            files = {}
            for name, path in _with_result_file(rep).files:
                if path.is_file() and path.stat().st_size <= MAX_FILE_BYTES:
                    files[name] = path.read_bytes()
            answer.append({"characteristics": rep.characteristics, "run_dir": rep.run_dir, "started": rep.started,
                           "duration_s": rep.duration_s, "files": files})
        features = platform_features(ctx)
    finally:
        ctx.close()
    return {"ok": True, "node": node, "choices": choices, "repetitions": answer, "features": features}


# -- ray -----------------------------------------------------------------------------------------
class RayExecutor:
    """One Ray task per combination, each holding a whole node; results come back to this driver.

    With ``address`` it joins that cluster; without, it starts a local Ray instance (one node, which offers
    ``NODE_RESOURCE`` once) and stops it afterwards. ``files_dir`` is where the result files that come back
    are written before they are recorded.
    """

    name = "ray"

    def __init__(self, ctx: Context, *, address: str | None, files_dir: Path) -> None:
        self.ctx = ctx
        self.address = address
        self.files_dir = files_dir

    def _start(self) -> Any:
        try:
            import ray  # function-local: ray is an optional extra ("ckx[ray]") and heavy to import
        except ImportError:
            raise UsageError("--executor=ray needs Ray, which is not installed",
                             hint='install it with: python -m pip install "ckx[ray]"') from None
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "warning"}
        if self.address:
            self.ctx.info(f"connecting to the Ray cluster at {self.address}")
            try:
                ray.init(address=self.address, **options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UsageError(f"--ray_address={self.address}: cannot connect to a Ray cluster there: {exc}",
                                 hint="start one with 'ray start --head --resources=\\'{\"ckx_node\": 1}\\''") from None
        else:
            # Its workers inherit this process's environment: the same ckx, CKX_HOME and repos.
            self.ctx.info("starting a local Ray instance (one node)")
            # num_cpus=1: the tasks ask for no CPUs (a benchmark takes the whole node through NODE_RESOURCE),
            # so one worker suffices, and Ray then starts one worker process ahead instead of one per core.
            ray.init(num_cpus=1, resources={NODE_RESOURCE: 1}, **options)
        nodes = [n for n in ray.nodes() if n.get("Alive") and (n.get("Resources") or {}).get(NODE_RESOURCE)]
        if not nodes:
            ray.shutdown()
            raise UsageError(f"the Ray cluster at {self.address} has no node offering the resource {NODE_RESOURCE!r}",
                             hint="start each node with: ray start ... --resources='{\"ckx_node\": 1}'")
        self.ctx.info(f"{len(nodes)} Ray node(s) offer {NODE_RESOURCE}")
        return ray

    def run(self, combos: Sequence[Combination], settings: RunSettings) -> Iterator[Outcome]:
        ray = self._start()
        pending: dict[Any, Combination] = {}
        try:
            task = ray.remote(run_on_node).options(resources={NODE_RESOURCE: 1}, num_cpus=0,
                                                   max_retries=TASK_RETRIES, retry_exceptions=False)
            for combo in combos:
                request = {"program": settings.program, "cmd_key": combo.cmd_key, "env": combo.env,
                           "dep_add_tags": combo.dep_add_tags, "deps": combo.deps, "extra_args": list(combo.extra_args),
                           "repetitions": settings.repetitions, "offline": settings.offline,
                           "print_files": list(settings.print_files), "timeout": settings.timeout_s}
                pending[task.remote(request)] = combo
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                ref = ready[0]
                combo = pending.pop(ref)
                try:
                    answer = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - any Ray error (a node lost past its retries) fails the combination
                    yield Outcome(combo, failure=_failure(f"the Ray task failed: {type(exc).__name__}: {exc}", None))
                    continue
                yield self._outcome(combo, answer)
        finally:
            for ref in pending:  # a sweep stopped early (--max_failures, Ctrl-C): nothing more runs
                ray.cancel(ref, force=True)
            ray.shutdown()

    def _outcome(self, combo: Combination, answer: Mapping[str, Any]) -> Outcome:
        node = answer.get("node")
        if not answer.get("ok"):
            return Outcome(combo, features=dict(answer.get("features") or {}), node=node,
                           failure=dict(answer.get("failure") or {}))
        reps = []
        for number, rep in enumerate(answer.get("repetitions") or [], start=1):
            folder = self.files_dir / f"{combo.index}" / str(number)
            files = []
            for name, data in (rep.get("files") or {}).items():
                path = folder / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                files.append((name, path))
            reps.append(Repetition(characteristics=rep.get("characteristics") or {}, run_dir=rep.get("run_dir"),
                                   started=rep.get("started"), duration_s=rep.get("duration_s"), files=tuple(files)))
        return Outcome(combo, dict(answer.get("choices") or {}), reps, dict(answer.get("features") or {}), node)


__all__ = ["LocalExecutor", "NODE_RESOURCE", "Outcome", "RayExecutor", "RunSettings", "log_tail", "node_name",
           "run_on_node"]
