"""The ckx command: parse argv, run the action, render the result; the single error boundary."""
from __future__ import annotations

import json
import logging
import os
import sys
from typing import Sequence

from ckx.api import run
from ckx.cli.parse import parse_argv
from ckx.cli.render import render
from ckx.core.errors import EXIT_INTERRUPTED, CkxError
from ckx.core.report import Progress, Reporter
from ckx.store.context import Context
from ckx.store.repo import DEV_ENV

log = logging.getLogger("ckx")


class _TqdmProgress(Progress):
    def __init__(self, bar) -> None:
        self.bar = bar

    def update(self, amount: int) -> None:
        self.bar.update(amount)

    def close(self) -> None:
        self.bar.close()


class TerminalReporter(Reporter):
    """Prints information as it happens: to stdout normally, to stderr under --json."""

    def __init__(self, *, json_mode: bool, quiet: bool) -> None:
        super().__init__()
        self.json_mode = json_mode
        self.quiet = quiet
        self.out = sys.stderr if json_mode else sys.stdout

    def info(self, message: str) -> None:
        super().info(message)
        print(message, file=self.out, flush=True)

    def warning(self, message: str) -> None:
        self.warnings.append(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)

    def output(self, line: str, *, stream: str = "stdout") -> None:
        target = sys.stderr if (stream == "stderr" or self.json_mode) else sys.stdout
        target.write(line if line.endswith("\n") else line + "\n")
        target.flush()

    def progress(self, description: str, total: int | None = None, *, unit: str = "B") -> Progress:
        if not sys.stderr.isatty():
            return Progress()
        from tqdm import tqdm  # reason: only a terminal download draws a bar, so start-up skips tqdm

        scale = unit == "B"
        return _TqdmProgress(tqdm(total=total, desc=description, unit=unit, unit_scale=scale,
                                  unit_divisor=1024 if scale else 1000, file=sys.stderr, leave=False))

    def choose(self, question: str, options: Sequence[str], default: int | None = None) -> int | None:
        print(question, file=sys.stderr)
        for number, option in enumerate(options):
            print(f"  {number}) {option}", file=sys.stderr)
        suffix = f" [{default}]" if default is not None else ""
        try:
            answer = input(f"choose a number{suffix}: ").strip()
        except EOFError:
            return None
        if not answer and default is not None:
            return default
        try:
            picked = int(answer)
        except ValueError:
            return None
        return picked if 0 <= picked < len(options) else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run ckx with ``argv`` (default: sys.argv[1:]) and return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    json_mode = "--json" in args or "--out=json" in args
    logging.basicConfig(level=logging.DEBUG if os.environ.get("CKX_DEBUG") else logging.ERROR,
                        format="%(name)s: %(message)s")
    ctx = None
    try:
        inp = parse_argv(args)
        json_mode = bool(inp.pop("json", False)) or inp.get("out") == "json"
        if inp.pop("dev", False):
            os.environ[DEV_ENV] = "1"  # the development flag: the built-in repo becomes writable
        quiet = bool(inp.get("quiet")) or os.environ.get("CKX_QUIET") == "1"
        reporter = TerminalReporter(json_mode=json_mode, quiet=quiet)
        ctx = Context(reporter=reporter, quiet=quiet)
        result = run(ctx, inp)
    except CkxError as exc:
        return _fail(exc, json_mode)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: say so in one line; the traceback is one variable away
        if os.environ.get("CKX_DEBUG"):
            raise
        print(f"error: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("hint: run again with CKX_DEBUG=1 for the traceback, and report it", file=sys.stderr)
        return 1
    finally:
        if ctx is not None:
            ctx.close()
    try:
        if json_mode:
            if ctx is not None and ctx.reporter.warnings:
                result.setdefault("warnings", list(ctx.reporter.warnings))
            print(json.dumps(result, indent=2, sort_keys=True, default=str))
        else:
            text = render(inp, result)
            if text:
                print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (head, grep -q) went away: not an error of ours. Keep the interpreter from
        # complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return int(result.get("return", 0) or 0)


def _fail(exc: CkxError, json_mode: bool) -> int:
    if json_mode:
        print(json.dumps(exc.to_dict(), indent=2, sort_keys=True))
    print(f"error: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"hint: {exc.hint}", file=sys.stderr)
    return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
