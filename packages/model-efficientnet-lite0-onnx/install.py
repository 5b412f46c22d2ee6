"""Install hook: export EfficientNet-Lite0 to ONNX in a subprocess and check it against torch."""

from __future__ import annotations

import json as _json
import math as _math
import pathlib as _pathlib
import typing as _typing

from ckx.software import hooks as _hooks
from ckx.core.errors import CkxError as _CkxError
from ckx.core.errors import IntegrityError as _IntegrityError
from ckx.core.errors import NotFound as _NotFound

_EXPORT_TIMEOUT_S = 900
_REPORT = "export_report.json"


def install(
    *,
    install_dir: _pathlib.Path,
    package_dir: _pathlib.Path,
    meta: dict,
    env: dict[str, str],
    python: str,
    info: _typing.Callable[[str], None],
) -> dict[str, str] | None:
    """Export the model into ``install_dir`` and verify it; raise a CkxError if anything is off."""
    check = meta.get("export_check", {})
    tolerance = float(check.get("tolerance", 1e-4))
    opset = int(check.get("opset", 17))
    photo = _check_photo(env, str(check.get("photo", "chelsea.png")))
    model_file = install_dir / str(meta.get("model_file", "model.onnx"))
    argv = [
        python,
        str(package_dir / "export.py"),
        "--out",
        str(model_file),
        "--photo",
        str(photo),
        "--report",
        str(install_dir / _REPORT),
        "--opset",
        str(opset),
        "--tolerance",
        repr(tolerance),
    ]
    info(f"exporting EfficientNet-Lite0 to ONNX (opset {opset}) and checking it against torch on {photo.name}")
    _hooks.run_script(
        argv,
        env=env,
        timeout=_EXPORT_TIMEOUT_S,
        what="EfficientNet-Lite0 export",
        hints={3: "the export is not faithful; nothing was installed"},
    )
    report = _check_report(install_dir / _REPORT, tolerance=tolerance)
    if not model_file.is_file():
        raise _CkxError(f"the export finished but {model_file.name} is missing from {install_dir}")
    info(f"ONNX matches torch: max abs diff {report['max_abs_diff']:.2g} (tolerance {tolerance:g})")
    return {"ML_MODEL_EXPORT_MAX_ABS_DIFF": f"{report['max_abs_diff']:.3g}"}


def _check_photo(env: dict[str, str], name: str) -> _pathlib.Path:
    """The real photo for the check, from the sample dataset dependency's image directory."""
    images = env.get("CK_ENV_DATASET_IMAGENET_VAL")
    if not images:
        raise _NotFound(
            "CK_ENV_DATASET_IMAGENET_VAL is not set: the export check needs the sample dataset",
            hint="install it first: ckx install package --tags=dataset,imagenet,2012,val,sample",
        )
    photo = _pathlib.Path(images) / name
    if not photo.is_file():
        raise _NotFound(
            f"check photo {photo} does not exist",
            hint="the dependency 'dataset,imagenet,2012,val,sample' provides it; reinstall that package",
        )
    return photo


def _check_report(path: _pathlib.Path, *, tolerance: float) -> dict:
    """Read the export report and enforce the tolerance again in this process.

    Raises CkxError when the report is missing or malformed, IntegrityError when the recorded
    difference exceeds ``tolerance`` or the top-1 classes of torch and ONNX disagree.
    """
    try:
        report = _json.loads(path.read_text(encoding="utf-8"))
        diff = float(report["max_abs_diff"])
        top1 = (list(report["top1_onnx"]), list(report["top1_torch"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _CkxError(f"export report {path} is missing or malformed: {exc}") from exc
    if not (_math.isfinite(diff) and diff <= tolerance):
        raise _IntegrityError(
            f"EfficientNet-Lite0 ONNX export differs from torch by max abs {diff:.3g} (tolerance {tolerance:g})",
            hint="the export is not faithful; nothing was installed",
        )
    if top1[0] != top1[1]:
        raise _IntegrityError(f"EfficientNet-Lite0 ONNX top-1 {top1[0]} differs from torch top-1 {top1[1]}")
    return report
