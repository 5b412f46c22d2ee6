"""The MLPerf image-classification programs end to end through the CLI, offline, on one shared home."""
from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ONNX = "program:image-classification-onnx-cpu"
PYTORCH = "program:image-classification-pytorch-cpu"
ACCURACY_LINE = re.compile(r"^accuracy=(\d+\.\d{3})%, good=(\d+), total=(\d+)$", re.MULTILINE)
SHORT = "--env.EXTRA_OPS=--time 1 --count 8"
KEYS = ("offline", "server", "singlestream", "multistream")
SCENARIOS = {"offline": "Offline", "server": "Server", "singlestream": "SingleStream", "multistream": "MultiStream"}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """One CKX_HOME for the whole module, so the embedded defaults are installed once."""
    return tmp_path_factory.mktemp("mlperf-home")


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module", autouse=True)
def programs_before() -> list[str]:
    """The program entries as they were before this module ran anything."""
    return listing(ROOT / "programs")


def ckx(home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update({"CKX_HOME": str(home), "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))})
    # PYTHONDONTWRITEBYTECODE goes too: ckx itself must keep the harness from writing __pycache__ into its entry
    for name in ("CKX_TOOLS", "CKX_URL_MAP", "CKX_OFFLINE", "CKX_DEBUG", "EXTRA_OPS", "CKX_BUILTIN_REPO",
                 "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "ckx", *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=timeout, cwd=home)


def ckx_json(home: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = ckx(home, *args, "--json")
    try:
        return proc, json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"not JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None


def predictions(run_dir: Path) -> dict[int, int]:
    """qsl_idx -> predicted class, decoded from LoadGen's accuracy log (float32 responses)."""
    entries = json.loads((run_dir / "mlperf_log_accuracy.json").read_text())
    return {e["qsl_idx"]: int(struct.unpack("<f", bytes.fromhex(e["data"])[:4])[0]) for e in entries}


def label_sets(val_map: Path) -> list[tuple[str, set[int]]]:
    rows = [line.split() for line in val_map.read_text().splitlines() if line.strip()]
    return [(name, {int(x) for x in labels.split(",")}) for name, labels in rows]


def test_offline_accuracy_prints_a_real_accuracy_line(home):
    proc = ckx(home, "run", ONNX, "--cmd_key=accuracy-offline", "--offline")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    match = ACCURACY_LINE.search(proc.stdout)
    assert match, proc.stdout
    good, total = int(match.group(2)), int(match.group(3))
    assert total == 6 and good >= 4
    run_dir = Path(re.search(r"^run directory: (.+) \(", proc.stdout, re.MULTILINE).group(1))
    assert run_dir.parent == home / "runs" / "image-classification-onnx-cpu"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["accuracy"]["good"] == good and result["accuracy"]["total"] == 6
    assert result["mode"] == "accuracy" and result["scenario"] == "Offline"
    assert result["run"]["deps"]["model"]["package"] == "model-efficientnet-lite0-onnx"
    assert result["run"]["versions"]["python"].startswith("3.")
    assert (run_dir / "accuracy.txt").read_text().strip() == match.group(0)
    # at least two known photos land in their label sets
    labels = label_sets(Path(result["dataset"]["list"]))
    predicted = predictions(run_dir)
    hits = {name for index, (name, accepted) in enumerate(labels) if predicted.get(index) in accepted}
    assert len(hits) == good
    assert {"chelsea.png", "coffee.png"} <= hits


def test_offline_singlestream_accuracy_and_print_files(home):
    proc, data = ckx_json(home, "run", ONNX, "--cmd_key=accuracy-singlestream", "--offline",
                          "--print_files=accuracy.txt")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ACCURACY_LINE.fullmatch(data["files"]["accuracy.txt"].strip())
    assert data["result"]["scenario"] == "SingleStream" and data["result"]["accuracy"]["total"] == 6
    assert data["choices"]["offline"] is True and data["choices"]["cmd_key"] == "accuracy-singlestream"


@pytest.mark.parametrize("scenario", KEYS)
def test_performance_keys_with_the_null_backend(home, scenario):
    proc, data = ckx_json(home, "run", ONNX, f"--cmd_key=performance-{scenario}", "--offline",
                          "--env.MLPERF_BACKEND=null", SHORT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = data["result"]
    assert result["scenario"] == SCENARIOS[scenario] and result["mode"] == "performance"
    assert result["backend"]["name"] == "null" and "model" not in data["choices"]["deps"]
    assert result["metric"]["value"] and result["metric"]["value"] > 0
    assert result["valid_for_submission"] is False and result["invalid_reasons"]
    assert result["run"]["skipped_deps"] == ["inference-src", "model", "onnxruntime"]


@pytest.mark.parametrize("scenario", KEYS)
def test_performance_keys_with_the_synthetic_resnet50(home, scenario):
    proc, data = ckx_json(home, "run", ONNX, f"--cmd_key=performance-{scenario}", "--offline",
                          "--dep_add_tags.model=synthetic", SHORT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = data["result"]
    assert data["choices"]["deps"]["model"]["package"] == "model-resnet50-synthetic-onnx"
    assert result["backend"]["name"] == "onnxruntime" and result["model"]["accuracy_meaningless"] is True
    assert result["scenario"] == SCENARIOS[scenario] and result["metric"]["value"] > 0
    assert result["valid_for_submission"] is False


def test_synthetic_model_in_accuracy_mode_warns(home):
    proc, data = ckx_json(home, "run", ONNX, "--cmd_key=accuracy-offline", "--offline",
                          "--dep_add_tags.model=synthetic")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ACCURACY IS MEANINGLESS" in proc.stderr
    assert data["result"]["accuracy"]["meaningless"] is True


def test_pytorch_program_runs_the_synthetic_state_dict(home):
    proc, data = ckx_json(home, "run", PYTORCH, "--cmd_key=performance-offline", "--offline", SHORT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = data["result"]
    assert result["backend"]["name"] == "pytorch" and result["scenario"] == "Offline"
    assert data["choices"]["deps"]["model"]["package"] == "model-resnet50-synthetic-pytorch"
    assert result["metric"]["value"] > 0


def _photo_dir(tmp_path: Path, lines: list[str]) -> Path:
    import skimage

    directory = tmp_path / "photos"
    directory.mkdir()
    (directory / "chelsea.png").write_bytes((Path(skimage.data_dir) / "chelsea.png").read_bytes())
    (directory / "val_map.txt").write_text("\n".join(lines) + "\n")
    return directory


def _dataset_env(directory: Path) -> list[str]:
    return [f"--env.CK_ENV_DATASET_IMAGENET_VAL={directory}",
            f"--env.CK_CAFFE_IMAGENET_VAL_TXT={directory}/val_map.txt"]


def test_missing_image_fails_naming_it(home, tmp_path):
    directory = _photo_dir(tmp_path, ["chelsea.png 281,282,285", "no-such-photo.png 1"])
    proc = ckx(home, "run", ONNX, "--cmd_key=accuracy-offline", "--offline", "--env.MLPERF_BACKEND=null",
               *_dataset_env(directory))
    assert proc.returncode == 6, proc.stderr[-3000:]
    assert "no-such-photo.png" in proc.stderr and "stderr.log" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_val_map_line_fails_naming_file_and_line(home, tmp_path):
    directory = _photo_dir(tmp_path, ["chelsea.png 281", "chelsea.png tabby"])
    proc = ckx(home, "run", ONNX, "--cmd_key=accuracy-offline", "--offline", "--env.MLPERF_BACKEND=null",
               *_dataset_env(directory))
    assert proc.returncode == 6, proc.stderr[-3000:]
    assert f"{directory}/val_map.txt:2" in proc.stderr and "tabby" in proc.stderr


def test_corrupt_model_fails_naming_it(home, tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"this is not an ONNX model\n" * 10)
    proc = ckx(home, "run", ONNX, "--cmd_key=performance-singlestream", "--offline", f"--env.ML_MODEL_FILE={corrupt}",
               SHORT)
    assert proc.returncode == 6, proc.stderr[-3000:]
    assert str(corrupt) in proc.stderr and "Traceback" not in proc.stderr


def test_runs_wrote_nothing_into_the_program_entries(programs_before):
    assert listing(ROOT / "programs") == programs_before
