"""Install hook of the derived model packages: run the harness module the meta's ``derive`` names on the parent model."""
# The hook of the abstract base entry that the derived model packages name as their "base": int8
# (harness.quantize, harness.torch_int8) and TensorFlow (harness.onnx_to_tf).
# meta.json ``derive``: {"module": "harness.quantize", "parent_env": "CK_ENV_ONNX_MODEL_ONNX_FILEPATH",
#  "parent_option": "--onnx" (the default), "out": "model.onnx", "args": ["--profile", "{env:ML_MODEL_PROFILE}", ...]} ; ``{env:NAME}`` takes a
# variable of the dependencies' environment, ``{install_dir}`` the directory being installed and
# ``{package_dir}`` this package's entry (files it ships, such as MLPerf's calibration list).

from __future__ import annotations

import json as _json
import pathlib as _pathlib
import typing as _typing

from ckx.software import hooks as _hooks
from ckx.software.environment import render as _render
from ckx.core.errors import CkxError as _CkxError
from ckx.core.errors import MetaError as _MetaError
from ckx.core.errors import NotFound as _NotFound

_TIMEOUT_S = 1800
_REPORT = "derive_report.json"
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
    """Derive the model from its parent into ``install_dir``; return the report's figures for the env record."""
    derive = meta.get("derive")
    if not isinstance(derive, dict) or not {"module", "parent_env", "out"} <= set(derive):
        raise _MetaError(f"{meta.get('alias')}: meta.json 'derive' needs 'module', 'parent_env' and 'out'")
    parent = env.get(str(derive["parent_env"]))
    if not parent or not _pathlib.Path(parent).is_file():
        raise _NotFound(f"the parent model ({derive['parent_env']}) is not available: {parent!r}",
                        hint="its package is a dependency of this one; reinstall that package")
    option = str(derive.get("parent_option", "--onnx"))
    argv = [python, "-m", str(derive["module"]), option, parent, "--out", str(install_dir / str(derive["out"])),
            "--report", str(install_dir / _REPORT)]
    where = f"{meta.get('alias')}: meta.json 'derive.args'"
    argv += [_expand(str(a), env, {"install_dir": install_dir, "package_dir": package_dir}, where)
             for a in derive.get("args", [])]
    info(f"{derive['module']}: deriving {derive['out']} from {parent}")
    script_env = _hooks.with_program_code(env, package_dir, program="image-classification-base",
                                          override=_BASE_ENV, needs="harness/__init__.py", extra={"TF_CPP_MIN_LOG_LEVEL": "2"})
    _hooks.run_script(argv, env=script_env, timeout=_TIMEOUT_S,
                      what=f"{derive['module']} on {_pathlib.Path(parent).name}")
    report = _read_report(install_dir / _REPORT)
    gate = report.get("gate")
    if isinstance(gate, dict):
        info(f"accuracy gate {'passed' if gate.get('passed') else 'NOT passed'}: {gate.get('statement')}")
        return {"ML_MODEL_ACCURACY_GATE_PASSED": "1" if gate.get("passed") else "0"}
    return None


def _expand(text: str, env: dict[str, str], dirs: dict[str, _pathlib.Path], where: str) -> str:
    """``{env:NAME}``, ``{install_dir}`` and ``{package_dir}`` through ckx's one placeholder engine."""
    expanded, complete = _render(text, {k: str(v) for k, v in dirs.items()}, where=where, env=env)
    if not complete:
        raise _NotFound(f"{where}: {text!r} names a variable that no dependency sets")
    return expanded


def _read_report(path: _pathlib.Path) -> dict:
    try:
        return dict(_json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise _CkxError(f"report {path} is missing or malformed: {exc}") from exc
