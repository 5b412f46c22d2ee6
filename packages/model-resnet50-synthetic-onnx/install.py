"""Install hook: export ResNet50 v1.5 with seeded random weights (accuracy meaningless) in a subprocess."""

from __future__ import annotations

import json as _json
import pathlib as _pathlib
import typing as _typing

from ckx.software import hooks as _hooks
from ckx.core.errors import CkxError as _CkxError
from ckx.core.errors import IntegrityError as _IntegrityError
from ckx.core.errors import MetaError as _MetaError

_TIMEOUT_S = 900
_REPORT = "export_report.json"
# Where the program base entry (holding harness/resnet50.py) lives, unless this variable says otherwise.
_BASE_ENV = "CKX_IMAGE_CLASSIFICATION_BASE"


def install(
    *,
    install_dir: _pathlib.Path,
    package_dir: _pathlib.Path,
    meta: dict,
    env: dict[str, str],
    python: str,
    info: _typing.Callable[[str], None],
) -> dict[str, str] | None:
    """Export the seeded model into ``install_dir``; return the weights digest for the env record."""
    synthetic = meta.get("synthetic") or {}
    try:
        seed = int(synthetic["seed"])
        model_file = str(synthetic["model_file"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _MetaError(
            f"{meta.get('alias')}: meta.json 'synthetic' needs an integer 'seed' and a 'model_file'"
        ) from exc
    menv = meta.get("env", {})
    argv = [
        python,
        "-m",
        "harness.resnet50",
        "--format",
        "onnx",
        "--seed",
        str(seed),
        "--out",
        str(install_dir / model_file),
        "--report",
        str(install_dir / _REPORT),
        "--opset",
        str(synthetic.get("opset", 17)),
        "--num-classes",
        str(menv.get("ML_MODEL_NUM_CLASSES", 1000)),
        "--input-name",
        str(menv.get("ML_MODEL_INPUT_LAYERS", "input_tensor:0")),
        "--output-name",
        str(menv.get("ML_MODEL_OUTPUT_LAYERS", "softmax_tensor:0")),
    ]
    info(
        f"exporting ResNet50 v1.5 with RANDOM weights (seed {seed}): accuracy is meaningless, for performance work only"
    )
    script_env = _hooks.with_program_code(env, package_dir, program="image-classification-base",
                                          override=_BASE_ENV, needs="harness/resnet50.py")
    _hooks.run_script(argv, env=script_env, timeout=_TIMEOUT_S, what="synthetic ResNet50 ONNX export")
    report = _read_report(install_dir / _REPORT, seed)
    return {"ML_MODEL_WEIGHTS_SHA256": report["weights_sha256"]}


def _read_report(path: _pathlib.Path, seed: int) -> dict:
    """The export report, checked to describe this seed and to carry a weights digest."""
    try:
        report = _json.loads(path.read_text(encoding="utf-8"))
        ok = report["seed"] == seed and len(report["weights_sha256"]) == 64
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _CkxError(f"export report {path} is missing or malformed: {exc}") from exc
    if not ok:
        raise _IntegrityError(f"export report {path} does not describe seed {seed}")
    return report
