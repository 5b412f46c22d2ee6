"""Code that entries carry (install.py, customize.py): load it, check its hooks, call them, run helper scripts.

The one hook contract: a hook is a function with keyword-only parameters, each one of the arguments ckx
offers that hook (or ``**kwargs`` for all of them); it is called with the arguments it declares. A hook
file is checked when it is loaded, so a typo in a hook's or a parameter's name is an error naming the
file and the function, before anything runs.
"""
from __future__ import annotations

import __future__
import contextlib
import difflib
import inspect
import logging
import os
import signal
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ckx.core.errors import CkxError, IntegrityError, MetaError, NotFound

log = logging.getLogger(__name__)
Hook = Callable[..., Any]


class HookAborted(MetaError):
    """A hook (or its file's top-level code) tried to end ckx: ``sys.exit``, or a KeyboardInterrupt (or any
    exception outside ``Exception``) that the hook raised itself.

    None of these may end ckx: the step the hook belonged to fails, naming the file and the function,
    and nothing is recorded. It is a MetaError (the entry is broken), so it passes every place that goes
    on past an ordinary failure of one candidate or one dependency. ``path`` and ``function`` name the
    hook (``function`` is "<module>" for the file's top-level code).
    """

    def __init__(self, path: Path | str, function: str, what: str) -> None:
        where = "while it loads" if function == "<module>" else f"in {function}()"
        super().__init__(f"hook file {path} {what} {where}; a hook may not end ckx",
                         hint="a hook reports failure by raising an exception; nothing was installed or recorded")
        self.path = str(path)
        self.function = function


class _RealInterrupts:
    """Tells the user's Ctrl-C (SIGINT delivered to the process) from a KeyboardInterrupt a hook raises.

    Only the main thread receives signals, so elsewhere every KeyboardInterrupt is the hook's own.
    """

    def __init__(self) -> None:
        self.seen = False
        self._previous: Any = None

    def __enter__(self) -> "_RealInterrupts":
        if threading.current_thread() is not threading.main_thread():
            return self
        previous = signal.getsignal(signal.SIGINT)
        if not callable(previous):
            return self  # ignored or fatal: no KeyboardInterrupt comes from a real Ctrl-C anyway
        self._previous = previous

        def on_sigint(signum: int, frame: Any) -> Any:
            self.seen = True
            return previous(signum, frame)

        signal.signal(signal.SIGINT, on_sigint)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _exit_text(exc: SystemExit) -> str:
    code = exc.code
    return "called sys.exit()" if code is None else f"called sys.exit({code!r})"


@contextlib.contextmanager
def guarded(path: Path | str, function: str) -> Iterator[None]:
    """Run a hook's code so that its ``sys.exit``, own KeyboardInterrupt or other BaseException becomes HookAborted.

    A real Ctrl-C of the user while the hook runs still propagates as KeyboardInterrupt.
    """
    watch = _RealInterrupts()
    try:
        with watch:
            yield
    except SystemExit as exc:
        raise HookAborted(path, function, _exit_text(exc)) from None
    except KeyboardInterrupt:
        if watch.seen:
            raise
        raise HookAborted(path, function, "raised KeyboardInterrupt") from None
    except Exception:
        raise
    except BaseException as exc:  # GeneratorExit, or a class of the hook's own below BaseException
        raise HookAborted(path, function, f"raised {type(exc).__name__}") from None


def load_source_module(path: Path, name: str) -> types.ModuleType:
    """Execute a Python file as a module named ``name`` without writing bytecode next to it.

    Entries live in repo checkouts, which ckx never writes into; the import system would leave a
    ``__pycache__`` directory there. Exceptions raised by the file's code propagate unchanged.
    """
    source = Path(path).read_bytes()
    code = compile(source, str(path), "exec", dont_inherit=True)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module  # for code that looks itself up while it runs (dataclasses, typing)
    try:
        exec(code, module.__dict__)
    finally:
        sys.modules.pop(name, None)
    return module


def _suggestion(name: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_hook(path: Path, name: str, function: Hook, offered: Collection[str]) -> None:
    """MetaError naming ``path`` and ``name`` unless each parameter is keyword-only and one of ``offered``.

    ``**kwargs`` is allowed (it receives every offered argument); positional parameters are not.
    """
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise MetaError(f"{path}: hook {name}() must take keyword-only arguments (def {name}(*, ...)); "
                            f"{parameter.name!r} is not")
        if parameter.name not in offered:
            raise MetaError(f"{path}: hook {name}() asks for {parameter.name!r}, which ckx does not offer"
                            f"{_suggestion(parameter.name, offered)}; it offers {', '.join(sorted(offered))}",
                            hint="declare only the arguments the hook uses, each by the name ckx offers")


def call_hook(function: Hook, offered: Mapping[str, Any]) -> Any:
    """Call a checked hook with the offered arguments it declares (all of them for ``**kwargs``).

    Exceptions of the hook propagate unchanged, except ``sys.exit`` and a KeyboardInterrupt the hook
    raises itself: those become HookAborted naming the hook's file and function (see ``guarded``).
    """
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        arguments = dict(offered)
    else:
        arguments = {name: value for name, value in offered.items() if name in parameters}
    code = getattr(function, "__code__", None)
    with guarded(code.co_filename if code else "<unknown file>", getattr(function, "__name__", repr(function))):
        return function(**arguments)


def load_hooks(path: Path, offered: Mapping[str, Collection[str]], *, file_label: str,
               private_names: bool = False) -> dict[str, Hook]:
    """Load a hook file and return its hooks by name, each checked against ``offered[name]``.

    Every public function defined in the file must be a hook; with ``private_names`` every other public
    name (an import, a constant) must be private too. Raises MetaError naming the file when it cannot be
    loaded or breaks the contract (``file_label``, e.g. "a customize.py", names the kind of file).
    """
    path = Path(path)
    module_name = f"_ckx_hooks_{abs(hash(str(path))):x}"
    try:
        with guarded(path, "<module>"):
            module = load_source_module(path, module_name)
    except CkxError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of foreign code becomes a MetaError naming it
        log.debug("loading %s failed", path, exc_info=True)
        raise MetaError(f"{path}: the file fails to load: {type(exc).__name__}: {exc}") from None
    hooks: dict[str, Hook] = {}
    for attr, value in vars(module).items():
        if attr.startswith("_") or isinstance(value, __future__._Feature):
            continue
        defined_here = inspect.isfunction(value) and value.__module__ == module_name
        if attr in offered:
            if defined_here:  # anything else by a hook's name is reported by the caller as a missing hook
                check_hook(path, attr, value, offered[attr])
                hooks[attr] = value
        elif defined_here or private_names:
            kind = "function" if defined_here else "name"
            raise MetaError(
                f"{path}: unknown public {kind} {attr!r}{_suggestion(attr, offered)}; {file_label} may define only "
                + ", ".join(sorted(offered)),
                hint="make helpers and imports private with a leading underscore (import os as _os)",
            )
    return hooks


# Exit statuses the helper scripts of the built-in packages use.
EXIT_CHECK_FAILED = 3
EXIT_MISSING_INPUT = 4


def run_script(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    what: str,
    integrity_codes: Sequence[int] = (EXIT_CHECK_FAILED,),
    missing_codes: Sequence[int] = (EXIT_MISSING_INPUT,),
    hints: Mapping[int, str] | None = None,
) -> None:
    """Run a helper script (argv list, no shell) and raise a typed error when it fails.

    The error carries the script's last ``error: ...`` line (or the tail of its stderr). An exit status
    in ``integrity_codes`` raises IntegrityError, one in ``missing_codes`` NotFound, any other CkxError;
    ``hints`` maps an exit status to the hint to attach.
    """
    # Helper scripts import code from entries (the harness's model definition): never leave bytecode there.
    environment = {**env, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run(list(argv), env=environment, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CkxError(f"{what} did not finish within {timeout:g} s") from exc
    except OSError as exc:
        raise CkxError(f"cannot run {argv[0]} for {what}: {exc}") from exc
    if proc.returncode == 0:
        return
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line[len("error: "):] for line in lines if line.startswith("error: ")]
    message = errors[-1] if errors else "\n".join(lines[-15:]) or "no output"
    hint = (hints or {}).get(proc.returncode)
    if proc.returncode in integrity_codes:
        raise IntegrityError(f"{what}: {message}", hint=hint)
    if proc.returncode in missing_codes:
        raise NotFound(f"{what}: {message}", hint=hint)
    raise CkxError(f"{what} failed (exit status {proc.returncode}): {message}", hint=hint)


def with_program_code(
    env: Mapping[str, str],
    package_dir: Path,
    *,
    program: str,
    override: str,
    needs: str,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``env`` with a built-in program entry's code importable first, for a hook's helper script.

    The program entry is ``programs/<program>`` of the package's own repo, or the directory that
    ``env[override]`` names; ``needs`` is a file under it that must exist (NotFound naming both otherwise).
    PYTHONSAFEPATH keeps the script's working directory out of ``sys.path``; ``extra`` adds variables.
    """
    named = env.get(override)
    base = Path(named) if named else package_dir.parent.parent / "programs" / program
    if not (base / needs).is_file():
        raise NotFound(f"{base / needs} does not exist",
                       hint=f"set {override} to the directory of the {program} program entry")
    path = os.pathsep.join(filter(None, [str(base.resolve()), env.get("PYTHONPATH")]))
    return {**env, "PYTHONPATH": path, "PYTHONSAFEPATH": "1", **(extra or {})}

