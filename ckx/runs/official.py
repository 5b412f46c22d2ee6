"""The official MLPerf tools of an installed inference source package, run as subprocesses."""
# The tools are never imported: each runs in its own interpreter with an argv list and a timeout,
# in a working directory of its own (the checker and the verification scripts write into theirs).
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ckx.store.context import Context
from ckx.core.errors import CkxError, NotFound
from ckx.software.envs import find_envs

SOURCE_TAGS = "mlperf,inference,src"
SOURCE_VAR = "MLPERF_INFERENCE_SOURCE"
INSTALL_HINT = ("ckx install package --tags=mlperf,inference,src (a git checkout at the release tag; "
                "--local_path=DIR installs from a copy on disk)")
TOOL_TIMEOUT_S = 900
ACCURACY_LINE = re.compile(r"^accuracy=\d+\.\d{3}%, good=\d+, total=\d+$", re.MULTILINE)
# ``[2026-12-01 09:18:08,014 performance_check.py:202 ERROR] message``
CHECKER_LINE = re.compile(r"^\[\S+ \S+ (\S+?):\d+ (INFO|WARNING|ERROR)\] ?(.*)$")


@dataclass(frozen=True)
class Source:
    """An installed MLPerf inference source tree."""

    root: Path
    version: str | None
    env_uid: str | None

    @property
    def checker_dir(self) -> Path:
        """``tools/submission``: run the checker as ``python -m submission_checker.main`` there."""
        return self.root / "tools" / "submission"

    @property
    def accuracy_imagenet(self) -> Path:
        """The official ImageNet accuracy script."""
        return self.root / "vision" / "classification_and_detection" / "tools" / "accuracy-imagenet.py"

    @property
    def truncate_tool(self) -> Path:
        """``truncate_accuracy_log.py``: writes the hash line and truncates accuracy logs."""
        return self.checker_dir / "truncate_accuracy_log.py"

    def checker_versions(self) -> list[str]:
        """The rules versions the installed checker knows (keys ``"vN.M"`` of its constants)."""
        constants = self.checker_dir / "submission_checker" / "constants.py"
        try:
            text = constants.read_text(encoding="utf-8")
        except OSError:
            raise NotFound(f"the MLPerf inference source {self.root} has no submission checker", hint=INSTALL_HINT) from None
        return sorted(set(re.findall(r'^\s*"(v\d+\.\d+)":\s*\{', text, re.MULTILINE)))


def find_source(ctx: Context) -> Source:
    """The newest installed MLPerf inference source package; NotFound with the install command otherwise."""

    for record in find_envs(ctx, SOURCE_TAGS):
        root = record.env.get(SOURCE_VAR) or record.install_dir
        if root and (Path(root) / "tools" / "submission").is_dir():
            return Source(Path(root), record.version, record.uid)
    raise NotFound("no MLPerf inference source package is installed", hint=INSTALL_HINT)


@dataclass(frozen=True)
class ToolRun:
    """What one official tool printed and its exit status."""

    argv: list[str]
    returncode: int
    output: str


def run_tool(argv: Sequence[str], *, cwd: Path, what: str, timeout_s: float = TOOL_TIMEOUT_S) -> ToolRun:
    """Run an official tool (no shell); CkxError if it cannot start or runs past ``timeout_s``."""
    args = [str(a) for a in argv]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False,
                              stdin=subprocess.DEVNULL, env=env)
    except subprocess.TimeoutExpired:
        raise CkxError(f"{what} did not finish within {timeout_s:g} s") from None
    except OSError as exc:
        raise CkxError(f"cannot run {what}: {exc.strerror or exc}") from None
    return ToolRun(args, proc.returncode, proc.stdout + proc.stderr)


def official_accuracy(source: Source, accuracy_log: Path, val_map: Path) -> str:
    """The official script's accuracy line for one log; CkxError (with its output) if it prints none."""
    run = run_tool([sys.executable, source.accuracy_imagenet, "--mlperf-accuracy-file", accuracy_log,
                    "--imagenet-val-file", val_map, "--dtype", "float32"], cwd=accuracy_log.parent,
                   what="the official accuracy-imagenet.py")
    match = ACCURACY_LINE.search(run.output)
    if run.returncode != 0 or not match:
        tail = "\n".join(run.output.strip().splitlines()[-5:])
        raise CkxError(f"the official accuracy script could not score {accuracy_log} against {val_map}:\n{tail}")
    return match.group(0)


def truncate_accuracy_logs(source: Source, staging: Path, out: Path, submitter: str) -> ToolRun:
    """Copy ``staging`` to ``out`` (which must not exist) with the official truncation and hash lines."""
    run = run_tool([sys.executable, source.truncate_tool, "--input", staging, "--output", out,
                    "--submitter", submitter], cwd=staging, what="the official truncate_accuracy_log.py")
    if run.returncode != 0 or not out.is_dir():
        tail = "\n".join(run.output.strip().splitlines()[-5:])
        raise CkxError(f"truncate_accuracy_log.py failed (exit {run.returncode}):\n{tail}")
    return run


def run_checker(source: Source, tree: Path, version: str, *, csv: Path, extra: Sequence[str] = ()) -> ToolRun:
    """The official submission checker on ``tree`` (its summary CSV goes to ``csv``)."""
    return run_tool([sys.executable, "-m", "submission_checker.main", "--input", tree.resolve(), "--version", version,
                     "--csv", csv.resolve(), *extra], cwd=source.checker_dir, what="the official submission checker")


@dataclass(frozen=True)
class CheckerMessage:
    """One line the checker logged: its level, the checker module that logged it, the text."""

    level: str
    check: str
    text: str


def checker_messages(output: str) -> list[CheckerMessage]:
    """The lines the checker logged, in order."""
    messages = []
    for line in output.splitlines():
        match = CHECKER_LINE.match(line.strip())
        if match:
            check = match.group(1).removesuffix(".py")
            messages.append(CheckerMessage(match.group(2), check, match.group(3).strip()))
    return messages
