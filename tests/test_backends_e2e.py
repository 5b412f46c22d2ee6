"""The TensorFlow, TVM, OpenVINO and int8 programs end to end through `ckx run`, offline, on one shared home."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ACCURACY_LINE = re.compile(r"^accuracy=(\d+\.\d{3})%, good=(\d+), total=(\d+)$", re.MULTILINE)
SHORT = "--env.EXTRA_OPS=--time 1 --count 8"
PROGRAMS = {"tensorflow": "image-classification-tf-cpu", "tvm": "image-classification-tvm-cpu",
            "openvino": "image-classification-openvino-cpu"}
OFFLINE_MODELS = {"tensorflow": "model-efficientnet-lite0-tf", "tvm": "model-efficientnet-lite0-onnx",
                  "openvino": "model-efficientnet-lite0-onnx"}
INT8_OFFLINE = "--dep_add_tags.model=int8,efficientnet-lite0,-resnet50"


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """One CKX_HOME for the module: the embedded defaults and derived models are installed once."""
    return tmp_path_factory.mktemp("backends-home")


def ckx_json(home: Path, *args: str, timeout: float = 900) -> tuple[subprocess.CompletedProcess, dict]:
    env = dict(os.environ)
    env.update({"CKX_HOME": str(home), "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))})
    for name in ("CKX_TOOLS", "CKX_URL_MAP", "CKX_OFFLINE", "CKX_DEBUG", "EXTRA_OPS", "CKX_BUILTIN_REPO"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-m", "ckx", *args, "--json"], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=timeout, cwd=home)
    try:
        return proc, json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"not JSON (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}") from None


@pytest.mark.parametrize("backend", list(PROGRAMS))
def test_backend_runs_accuracy_offline_and_singlestream_on_the_offline_default(home, backend):
    program = f"program:mlperf-inference-bench-{PROGRAMS[backend]}"  # the CK-style long alias
    proc, data = ckx_json(home, "run", program, "--cmd_key=accuracy-offline", "--offline")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = data["result"]
    assert result["backend"]["name"] == backend
    assert data["choices"]["deps"]["model"]["package"] == OFFLINE_MODELS[backend]
    accuracy = result["accuracy"]
    assert accuracy["total"] == 6 and accuracy["good"] >= 4 and not accuracy["meaningless"]

    proc, data = ckx_json(home, "run", program, "--cmd_key=performance-singlestream", "--offline", SHORT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = data["result"]
    assert result["scenario"] == "SingleStream" and result["backend"]["name"] == backend
    assert result["metric"]["value"] > 0 and result["valid_for_submission"] is False


def test_int8_package_installs_offline_and_the_run_states_its_accuracy_gate(home):
    proc, data = ckx_json(home, "run", "program:image-classification-onnx-cpu", "--cmd_key=accuracy-offline",
                          "--offline", INT8_OFFLINE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert data["choices"]["deps"]["model"]["package"] == "model-efficientnet-lite0-onnx-int8"
    result = data["result"]
    gate = result["model"]["accuracy_gate"]
    assert result["model"]["precision"] == "int8"
    assert gate["variants"] >= 500 and gate["photos"] == 6 and 0.0 <= gate["top1_agreement_variants"] <= 1.0
    assert gate["passed"] == (gate["top1_agreement_variants"] >= 0.97 and not gate["photos_lost_int8"])
    assert result["accuracy"]["good"] >= 4


def test_openvino_runs_the_int8_model_under_the_throughput_hint_offline(home):
    proc, data = ckx_json(home, "run", "program:image-classification-openvino-cpu", "--cmd_key=performance-offline",
                          "--offline", INT8_OFFLINE, SHORT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    backend = data["result"]["backend"]
    assert backend["precision"] == "int8" and backend["performance_hint"] == "THROUGHPUT"
    assert data["result"]["metric"]["value"] > 0
