"""``python -m harness`` end to end on a dataset of real photos: null, onnxruntime and pytorch backends."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

BASE = Path(__file__).resolve().parent.parent / "programs" / "image-classification-base"
# LoadGen 6.0.17's built-in conf, as the official source tree ships it
MLPERF_CONF = BASE.parent.parent.parent / "shared" / "third_party" / "mlperf-inference" / "loadgen" / "mlperf.conf"
sys.path.insert(0, str(BASE))

from harness import cli  # noqa: E402
from harness.backends import NULL_RAW_CLASS  # noqa: E402
from harness.dataset import load_dataset, read_val_map  # noqa: E402
from harness.errors import FormatError, InputNotFound, UsageError  # noqa: E402
from harness.result import read_detail_log, read_summary  # noqa: E402

MEANS = np.array([123.68, 116.78, 103.94], dtype=np.float32)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{name} is not installed (its sample photos are the test data)")
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Six real photos as JPEG and PNG with a val_map of acceptable ImageNet labels."""
    skimage_data = _package_dir("skimage") / "data"
    mpl_data = _package_dir("matplotlib") / "mpl-data" / "sample_data"
    directory = tmp_path_factory.mktemp("photos")
    shutil.copy(skimage_data / "chelsea.png", directory / "chelsea.png")
    cv2.imwrite(str(directory / "coffee.jpg"), cv2.imread(str(skimage_data / "coffee.png")))
    shutil.copy(skimage_data / "rocket.jpg", directory / "rocket.jpg")
    shutil.copy(skimage_data / "motorcycle_left.png", directory / "motorcycle.png")
    shutil.copy(skimage_data / "camera.png", directory / "camera.png")
    shutil.copy(mpl_data / "grace_hopper.jpg", directory / "grace_hopper.jpg")
    (directory / "val_map.txt").write_text(
        "chelsea.png 281,282,285\ncoffee.jpg 967,968,504\nrocket.jpg 657,744,812\n"
        "motorcycle.png 665,670\ncamera.png 872,759\ngrace_hopper.jpg 652\n"
    )
    return directory


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("crop-cache")


def run_harness(run_dir: Path, *args: str, extra_ops: str | None = None, timeout: int = 180):
    """Run the harness as the program runner does: fresh cwd, PYTHONPATH at the base entry."""
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "EXTRA_OPS"}
    env["PYTHONPATH"] = str(BASE)
    if extra_ops is not None:
        env["EXTRA_OPS"] = extra_ops
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=run_dir, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def read_result(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def decoded_log(run_dir: Path) -> dict[int, float]:
    """qsl_idx -> float32 response of each entry of mlperf_log_accuracy.json (asserting no duplicates)."""
    entries = json.loads((run_dir / "mlperf_log_accuracy.json").read_text())
    out: dict[int, float] = {}
    for entry in entries:
        assert entry["qsl_idx"] not in out
        out[entry["qsl_idx"]] = float(np.frombuffer(bytes.fromhex(entry["data"]), dtype=np.float32)[0])
    return out


METRICS = {"SingleStream": "p90_latency_ms", "MultiStream": "p99_latency_ms", "Server": "qps",
           "Offline": "samples_per_second"}


@pytest.mark.parametrize("scenario", ["SingleStream", "MultiStream", "Server", "Offline"])
def test_null_backend_performance_in_every_scenario(tmp_path, photos, cache_dir, scenario):
    run = tmp_path / "run"
    done = run_harness(run, "--backend", "null", "--scenario", scenario, "--dataset-path", str(photos),
                       "--cache-dir", str(cache_dir), "--time", "1", "--qps", "2000")
    assert done.returncode == 0, done.stderr
    result = read_result(run)
    assert result["schema_version"] == 1
    assert (result["scenario"], result["mode"]) == (scenario, "performance")
    assert result["metric"]["name"] == METRICS[scenario] and result["metric"]["value"] > 0
    assert result["valid_for_submission"] is False
    assert any("min_duration (ms) 1,000 is below the rules' 600,000" in r for r in result["invalid_reasons"])
    assert any("performance sample count 6" in r for r in result["invalid_reasons"])
    assert result["loadgen"]["min_duration_ms"] == 1000
    assert result["rules"]["min_duration_ms"] == 600000
    assert result["backend"]["name"] == "null" and result["dataset"]["count"] == 6
    assert set(result["versions"]) >= {"python", "numpy", "cv2", "loadgen"}
    assert result["harness"]["completed_samples"] > 0
    assert (run / "mlperf_log_summary.txt").is_file() and (run / "mlperf_log_detail.txt").is_file()
    if scenario == "Offline":
        assert result["samples_per_second"] == result["metric"]["value"]
        # --time bounds Offline too: expected QPS x duration samples, not the rules' 24,576
        assert 2000 <= result["loadgen"]["samples_per_query"] < 24576
        assert any("offline samples in the query" in r for r in result["invalid_reasons"])
    elif scenario == "Server":
        assert result["completed_qps"] > 0 and result["scheduled_qps"] > 0
        assert result["latency_ms"]["p99"] > 0
    elif scenario == "MultiStream":
        assert result["loadgen"]["samples_per_query"] == 8
        assert result["early_stopping"]["met"] in (True, False)
    else:  # the official metric is LoadGen's early-stopping estimate; the raw percentile stays beside it
        estimate = result["early_stopping"]["p90_latency_ms"]
        assert result["metric"]["value"] == (estimate or result["latency_ms"]["p90"])
        assert result["metric"]["official"] is bool(estimate) and result["metric"]["raw"] == result["latency_ms"]["p90"]
    assert result["mlperf_rules"]["version"] == "v6.1" and result["mlperf_rules"]["loadgen_version"] == "6.0.17"
    assert result["mlperf_rules"]["conf_sha1"] == hashlib.sha1(MLPERF_CONF.read_bytes()).hexdigest()
    assert result["audit"] is None
    assert scenario in done.stdout and "valid for submission: no" in done.stdout and "rules v6.1" in done.stdout
    assert re.search(r"^expected duration: about \d+ s", done.stdout, re.MULTILINE)


def test_count_limits_the_dataset_and_the_queries(tmp_path, photos, cache_dir):
    run = tmp_path / "run"
    done = run_harness(run, "--backend", "null", "--scenario", "SingleStream", "--dataset-path", str(photos),
                       "--cache-dir", str(cache_dir), "--count", "4", "--time", "1")
    assert done.returncode == 0, done.stderr
    result = read_result(run)
    assert result["dataset"]["count"] == 4
    assert result["query_count"] == 4
    assert result["loadgen"]["max_query_count"] == 4


def test_a_short_server_run_ends_by_its_count_and_time_with_no_loadgen_error(tmp_path, photos, cache_dir):
    # capped by max_query_count, LoadGen logs "Ending early" as an error, which the official compliance
    # verification cannot read; with --time the count is a minimum and the run ends on its own
    run = tmp_path / "run"
    done = run_harness(run, "--backend", "null", "--scenario", "Server", "--dataset-path", str(photos),
                       "--cache-dir", str(cache_dir), "--count", "500", "--time", "0.2", "--qps", "1000")
    assert done.returncode == 0, done.stderr
    result = read_result(run)
    assert result["loadgen"]["max_query_count"] == 0 and result["loadgen"]["min_query_count"] == 500
    assert result["loadgen_errors"] == [] and result["valid"] is True
    assert 500 <= result["query_count"] < 700  # max(count, QPS x time)
    assert not any("LoadGen logged" in reason for reason in result["invalid_reasons"])


def test_null_backend_accuracy_is_logged_sample_by_sample(tmp_path, photos, cache_dir):
    run = tmp_path / "run"
    done = run_harness(run, "--backend", "null", "--scenario", "Offline", "--accuracy", "--dataset-path",
                       str(photos), "--cache-dir", str(cache_dir), "--label-offset", "281")
    assert done.returncode == 0, done.stderr
    predicted = NULL_RAW_CLASS + 281  # 282, tiger cat: right for chelsea.png only
    assert "accuracy=16.667%, good=1, total=6" in done.stdout.splitlines()
    assert decoded_log(run) == {i: float(predicted) for i in range(6)}
    assert (run / "accuracy.txt").read_text() == "accuracy=16.667%, good=1, total=6\n"
    result = read_result(run)
    assert result["mode"] == "accuracy" and result["accuracy"]["good"] == 1 and result["accuracy"]["total"] == 6
    assert result["valid"] is True and result["valid_for_submission"] is False
    assert any("accuracy mode" in r for r in result["invalid_reasons"])
    standalone = subprocess.run(
        [sys.executable, "-m", "harness.accuracy", "--mlperf-accuracy-file", str(run / "mlperf_log_accuracy.json"),
         "--val-map", str(photos / "val_map.txt")],
        env=dict(os.environ, PYTHONPATH=str(BASE)), capture_output=True, text=True, timeout=60, check=True)
    assert standalone.stdout == "accuracy=16.667%, good=1, total=6\n"


def test_meaningless_accuracy_is_flagged(tmp_path, photos, cache_dir):
    run = tmp_path / "run"
    done = run_harness(run, "--backend", "null", "--scenario", "SingleStream", "--accuracy", "--dataset-path",
                       str(photos), "--cache-dir", str(cache_dir), "--accuracy-meaningless")
    assert done.returncode == 0, done.stderr
    assert "ACCURACY IS MEANINGLESS" in done.stderr
    result = read_result(run)
    assert result["model"]["accuracy_meaningless"] is True
    assert any("random weights" in r for r in result["invalid_reasons"])


def test_extra_ops_come_after_argv_and_win(tmp_path, photos, cache_dir):
    run = tmp_path / "run"
    done = run_harness(run, "--backend", "null", "--scenario", "SingleStream", "--dataset-path", str(photos),
                       "--cache-dir", str(cache_dir), "--time", "30",
                       extra_ops="--scenario Offline --time 1 --count 5")
    assert done.returncode == 0, done.stderr
    result = read_result(run)
    assert result["scenario"] == "Offline" and result["dataset"]["count"] == 5
    assert result["loadgen"]["min_duration_ms"] == 1000


def test_output_dir_is_created_and_used(tmp_path, photos, cache_dir):
    out = tmp_path / "deep" / "logs"
    done = run_harness(tmp_path / "cwd", "--backend", "null", "--scenario", "Offline", "--dataset-path",
                       str(photos), "--cache-dir", str(cache_dir), "--time", "1", "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "result.json").is_file() and (out / "mlperf_log_detail.txt").is_file()
    assert not (tmp_path / "cwd" / "result.json").exists()


# ---------------------------------------------------------------- unhappy paths


def test_missing_image_fails_naming_it_and_its_line(tmp_path, photos, cache_dir):
    listing = tmp_path / "val_map.txt"
    listing.write_text("chelsea.png 281\ncoffee.jpg 967\nnot_there.JPEG 1\n")
    done = run_harness(tmp_path / "run", "--backend", "null", "--dataset-path", str(photos), "--dataset-list",
                       str(listing), "--cache-dir", str(cache_dir))
    assert done.returncode == 3
    assert "not_there.JPEG" in done.stderr and "val_map.txt:3" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_val_map_line_fails_naming_file_and_line(tmp_path, photos, cache_dir):
    listing = tmp_path / "val_map.txt"
    listing.write_text("chelsea.png 281\ncoffee.jpg nine-six-seven\n")
    done = run_harness(tmp_path / "run", "--backend", "null", "--dataset-path", str(photos), "--dataset-list",
                       str(listing), "--cache-dir", str(cache_dir))
    assert done.returncode == 1
    assert "val_map.txt:2" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("backend, name", [("onnxruntime", "corrupt.onnx"), ("pytorch", "corrupt.pth")])
def test_corrupt_model_fails_naming_the_file(tmp_path, photos, cache_dir, backend, name):
    model = tmp_path / name
    model.write_bytes(b"\x08\x07garbage that is not a model" * 10)
    done = run_harness(tmp_path / "run", "--backend", backend, "--model", str(model), "--dataset-path",
                       str(photos), "--cache-dir", str(cache_dir), "--time", "1")
    assert done.returncode == 1
    assert "error: cannot load" in done.stderr and name in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_model_and_missing_option(tmp_path, photos, cache_dir):
    done = run_harness(tmp_path / "run", "--backend", "onnxruntime", "--model", str(tmp_path / "absent.onnx"),
                       "--dataset-path", str(photos), "--cache-dir", str(cache_dir))
    assert done.returncode == 3 and "absent.onnx" in done.stderr
    done = run_harness(tmp_path / "run", "--backend", "onnxruntime", "--dataset-path", str(photos))
    assert done.returncode == 2 and "--model" in done.stderr


def test_missing_user_conf_is_reported(tmp_path, photos, cache_dir):
    done = run_harness(tmp_path / "run", "--backend", "null", "--dataset-path", str(photos), "--cache-dir",
                       str(cache_dir), "--user-conf", str(tmp_path / "user.conf"))
    assert done.returncode == 3 and "user.conf" in done.stderr


def test_unparsable_user_conf_is_reported(tmp_path, photos, cache_dir):
    conf = tmp_path / "broken.conf"
    conf.write_text("this is not a conf line\n")
    done = run_harness(tmp_path / "run", "--backend", "null", "--dataset-path", str(photos), "--cache-dir",
                       str(cache_dir), "--user-conf", str(conf))
    assert done.returncode == 1 and "broken.conf" in done.stderr


def test_bad_extra_ops_quoting_is_a_usage_error():
    with pytest.raises(UsageError, match="EXTRA_OPS"):
        cli.parse_args(["--dataset-path", "x"], {"EXTRA_OPS": "--model 'unclosed"})


# ---------------------------------------------------------------- the parts, in-process


def test_val_map_reading_rules(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("\na.JPEG 1\n\n  b.JPEG 2,3  \nc.JPEG 4\n")
    entries = read_val_map(listing)
    assert [(e.name, e.labels, e.line) for e in entries] == [("a.JPEG", (1,), 2), ("b.JPEG", (2, 3), 4),
                                                             ("c.JPEG", (4,), 5)]
    assert [e.name for e in read_val_map(listing, count=2)] == ["a.JPEG", "b.JPEG"]
    with pytest.raises(InputNotFound, match="nope.txt"):
        read_val_map(tmp_path / "nope.txt")
    listing.write_bytes(b"a.JPEG 1\n\xff\xfe 2\n")
    with pytest.raises(FormatError, match="UTF-8"):
        read_val_map(listing)


def test_load_dataset_keeps_order_and_clamps_count(photos, caplog):
    dataset = load_dataset(photos, count=100)
    assert [s.index for s in dataset.samples] == list(range(6))
    assert dataset.samples[1].name == "coffee.jpg" and dataset.samples[1].labels == (967, 968, 504)
    assert "lists only 6" in caplog.text
    with pytest.raises(UsageError):
        load_dataset(photos, count=0)
    with pytest.raises(InputNotFound, match="no_such_dir"):
        load_dataset(photos / "no_such_dir")


def test_result_parsing_survives_a_cut_line_and_reads_the_summary(tmp_path):
    detail = tmp_path / "mlperf_log_detail.txt"
    detail.write_text(
        ':::MLLOG {"key": "result_validity", "value": "VALID", "metadata": {"is_error": false}}\n'
        ':::MLLOG {"key": "error_runtime", "value": "boom", "metadata": {"is_error": true}}\n'
        ':::MLLOG {"key": "result_samples_per_sec'
    )
    parsed = read_detail_log(detail)
    assert parsed.values["result_validity"] == "VALID" and parsed.errors == ("error_runtime: boom",)
    summary = tmp_path / "mlperf_log_summary.txt"
    summary.write_text("Scenario : Offline\nSamples per second: 25.5\nResult is : VALID\n * note: x\n")
    assert read_summary(summary) == {"Scenario": "Offline", "Samples per second": "25.5", "Result is": "VALID"}


# ---------------------------------------------------------------- real frameworks


@pytest.fixture(scope="module")
def resnet_files(tmp_path_factory) -> dict[str, Path]:
    """A seeded ResNet50 as an ONNX export and as a state_dict of the same weights."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from harness.resnet50 import build_resnet50, export_onnx, seeded_state_dict

    directory = tmp_path_factory.mktemp("model")
    model = build_resnet50()
    model.load_state_dict(seeded_state_dict(0))
    onnx_path = export_onnx(model, directory / "resnet50_seeded.onnx")
    pth_path = directory / "resnet50_seeded.pth"
    torch.save(model.state_dict(), pth_path)
    return {"onnx": onnx_path, "pth": pth_path}


def direct_onnx_predictions(model: Path, photos: Path) -> list[int]:
    """Top-1 of each listed photo, computed here without the harness (its steps written out)."""
    import onnxruntime as ort

    crops = []
    for entry in read_val_map(photos / "val_map.txt"):
        rgb = np.ascontiguousarray(cv2.imread(str(photos / entry.name))[:, :, ::-1])
        h, w = rgb.shape[:2]
        size = (256, int(256.0 * h / w)) if h > w else (int(256.0 * w / h), 256)
        resized = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        top, left = int((size[1] - 224) / 2), int((size[0] - 224) / 2)
        crops.append(resized[top:top + 224, left:left + 224])
    batch = (np.stack(crops).astype(np.float32) - MEANS).transpose(0, 3, 1, 2)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    scores = session.run(None, {"input_tensor:0": np.ascontiguousarray(batch)})[0]
    return [int(i) for i in scores.argmax(axis=1)]


@pytest.mark.slow
def test_onnxruntime_accuracy_offline_and_singlestream(tmp_path, photos, cache_dir, resnet_files):
    expected = direct_onnx_predictions(resnet_files["onnx"], photos)
    assert len(set(expected)) >= 3, "the seeded model should tell these photos apart"
    for scenario in ("Offline", "SingleStream"):
        run = tmp_path / scenario
        done = run_harness(run, "--backend", "onnxruntime", "--model", str(resnet_files["onnx"]), "--scenario",
                           scenario, "--accuracy", "--dataset-path", str(photos), "--cache-dir", str(cache_dir),
                           "--accuracy-meaningless", "--max-batchsize", "4")
        assert done.returncode == 0, done.stderr
        assert decoded_log(run) == {i: float(c) for i, c in enumerate(expected)}
        result = read_result(run)
        assert result["accuracy"]["total"] == 6
        assert result["backend"]["name"] == "onnxruntime" and "onnxruntime" in result["versions"]
        assert result["backend"]["provider"] == "CPUExecutionProvider"


@pytest.mark.slow
def test_onnxruntime_performance_offline_and_singlestream(tmp_path, photos, cache_dir, resnet_files):
    for scenario in ("Offline", "SingleStream"):
        run = tmp_path / scenario
        done = run_harness(run, "--backend", "onnxruntime", "--model", str(resnet_files["onnx"]), "--scenario",
                           scenario, "--dataset-path", str(photos), "--cache-dir", str(cache_dir), "--time", "1",
                           "--count", "6", "--qps", "5", "--threads", "2")
        assert done.returncode == 0, done.stderr
        result = read_result(run)
        assert result["metric"]["name"] == METRICS[scenario] and result["metric"]["value"] > 0
        assert result["threads"] == 2 and result["backend"]["threads"] == 2
        assert result["valid_for_submission"] is False


@pytest.mark.slow
def test_pytorch_state_dict_agrees_with_the_onnx_export(tmp_path, photos, cache_dir, resnet_files):
    expected = direct_onnx_predictions(resnet_files["onnx"], photos)
    run = tmp_path / "torch"
    done = run_harness(run, "--backend", "pytorch", "--model", str(resnet_files["pth"]), "--scenario", "Offline",
                       "--accuracy", "--dataset-path", str(photos), "--cache-dir", str(cache_dir),
                       "--max-batchsize", "3")
    assert done.returncode == 0, done.stderr
    assert decoded_log(run) == {i: float(c) for i, c in enumerate(expected)}
    result = read_result(run)
    assert result["backend"]["name"] == "pytorch" and "torch" in result["versions"]


@pytest.mark.slow
def test_label_offset_and_nhwc_layout_with_onnxruntime(tmp_path, photos, cache_dir, resnet_files):
    """An NHWC run of the NCHW export is refused with a hint; the offset shifts every prediction."""
    expected = direct_onnx_predictions(resnet_files["onnx"], photos)
    done = run_harness(tmp_path / "nhwc", "--backend", "onnxruntime", "--model", str(resnet_files["onnx"]),
                       "--data-layout", "NHWC", "--dataset-path", str(photos), "--cache-dir", str(cache_dir))
    assert done.returncode == 1 and "--data-layout NCHW" in done.stderr
    run = tmp_path / "offset"
    done = run_harness(run, "--backend", "onnxruntime", "--model", str(resnet_files["onnx"]), "--scenario",
                       "Offline", "--accuracy", "--label-offset", "-1", "--dataset-path", str(photos),
                       "--cache-dir", str(cache_dir))
    assert done.returncode == 0, done.stderr
    assert decoded_log(run) == {i: float(c - 1) for i, c in enumerate(expected)}


@pytest.mark.slow
def test_accuracy_over_several_loaded_sets_keeps_every_label_in_place(tmp_path, photos, resnet_files):
    """12 distinct images loaded 5 at a time: each prediction must still belong to its own image."""
    directory = tmp_path / "twelve"
    directory.mkdir()
    lines = []
    for entry in read_val_map(photos / "val_map.txt"):
        image = cv2.imread(str(photos / entry.name))
        stem = Path(entry.name).stem
        cv2.imwrite(str(directory / f"{stem}.png"), image)
        cv2.imwrite(str(directory / f"{stem}_flipped.png"), cv2.flip(image, 1))
        lines += [f"{stem}.png 1", f"{stem}_flipped.png 2"]
    (directory / "val_map.txt").write_text("\n".join(lines) + "\n")
    conf = tmp_path / "user.conf"
    conf.write_text("*.SingleStream.performance_sample_count_override = 5\n")
    expected = direct_onnx_predictions(resnet_files["onnx"], directory)
    run = tmp_path / "run"
    done = run_harness(run, "--backend", "onnxruntime", "--model", str(resnet_files["onnx"]), "--scenario",
                       "SingleStream", "--accuracy", "--dataset-path", str(directory), "--cache-dir",
                       str(tmp_path / "cache"), "--user-conf", str(conf))
    assert done.returncode == 0, done.stderr
    assert decoded_log(run) == {i: float(c) for i, c in enumerate(expected)}
    assert read_result(run)["harness"]["qsl_loads"] == 3


@pytest.mark.slow
def test_resnet50_definition_is_v15_with_torchvision_keys_and_seeded_weights():
    torch = pytest.importorskip("torch")
    from harness.resnet50 import build_resnet50, seeded_state_dict

    model = build_resnet50()
    keys = list(model.state_dict())
    assert len(keys) == 320 and keys[0] == "conv1.weight" and keys[-2:] == ["fc.weight", "fc.bias"]
    for key in ("layer1.0.downsample.0.weight", "layer4.0.downsample.1.running_var", "layer3.5.bn3.weight",
                "bn1.num_batches_tracked"):
        assert key in keys
    assert model.layer2[0].conv1.stride == (1, 1) and model.layer2[0].conv2.stride == (2, 2)  # v1.5
    assert model.layer1[0].downsample is not None and model.layer1[1].downsample is None
    assert build_resnet50(num_classes=1001).fc.out_features == 1001
    first, again, other = seeded_state_dict(7), seeded_state_dict(7), seeded_state_dict(8)
    assert all(torch.equal(first[k], again[k]) for k in keys)
    assert not torch.equal(first["conv1.weight"], other["conv1.weight"])
    assert torch.equal(first["bn1.weight"], torch.ones(64)) and torch.equal(first["bn1.bias"], torch.zeros(64))
    assert not torch.equal(first["bn1.running_var"], torch.ones(64))  # calibrated, not the defaults
    model.load_state_dict(first, strict=True)
    with torch.inference_mode():
        logits = model(torch.zeros(2, 3, 224, 224))
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_pytorch_backend_loads_torchscript_and_pickled_modules_and_rejects_misfits(tmp_path):
    torch = pytest.importorskip("torch")
    from harness.backends import create_backend
    from harness.errors import ModelError

    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    batch = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        expected = tiny(torch.from_numpy(batch)).argmax(1).numpy()
    scripted = tmp_path / "tiny_script.pt"
    torch.jit.trace(tiny, torch.from_numpy(batch)).save(str(scripted))
    pickled = tmp_path / "tiny_module.pt"
    torch.save(tiny, pickled)
    for path in (scripted, pickled):
        backend = create_backend("pytorch", threads=1, label_offset=10)
        backend.load(path)
        assert np.array_equal(backend.predict(batch), expected + 10)

    misfit = tmp_path / "misfit.pth"
    torch.save({"fc.weight": torch.zeros(10, 7), "fc.bias": torch.zeros(10)}, misfit)
    with pytest.raises(ModelError, match="misfit.pth"):
        create_backend("pytorch", threads=1).load(misfit)
    no_fc = tmp_path / "no_fc.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, no_fc)
    with pytest.raises(ModelError, match="no_fc.pth"):
        create_backend("pytorch", threads=1).load(no_fc)
    not_a_model = tmp_path / "numbers.pth"
    torch.save([1, 2, 3], not_a_model)
    with pytest.raises(ModelError, match="numbers.pth"):
        create_backend("pytorch", threads=1).load(not_a_model)


def test_onnxruntime_backend_handles_argmax_outputs_and_checks_names(tmp_path):
    """A model whose output is already an ArgMax (int64), like the MLPerf ONNX model's ArgMax:0."""
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from harness.backends import create_backend
    from harness.errors import ModelError, UsageError

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input_tensor:0"], ["pooled"], axes=[2, 3], keepdims=0),
         helper.make_node("ArgMax", ["pooled"], ["ArgMax:0"], axis=1, keepdims=0),
         helper.make_node("Softmax", ["pooled"], ["softmax_tensor:0"], axis=1)],
        "tiny",
        [helper.make_tensor_value_info("input_tensor:0", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("ArgMax:0", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("softmax_tensor:0", TensorProto.FLOAT, ["N", 3])],
    )
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    batch = np.zeros((3, 3, 8, 8), dtype=np.float32)
    for k in range(3):
        batch[k, (k + 1) % 3] = 1.0
    for output in ("ArgMax:0", "softmax_tensor:0"):
        backend = create_backend("onnxruntime", threads=1, label_offset=-1, output_name=output)
        backend.load(path)
        assert backend.predict(batch).tolist() == [0, 1, -1]
    with pytest.raises(ModelError, match="no output 'logits'"):
        create_backend("onnxruntime", threads=1, output_name="logits").load(path)
    with pytest.raises(ModelError, match="no input 'data'"):
        create_backend("onnxruntime", threads=1, input_name="data").load(path)
    with pytest.raises(UsageError, match="not available"):
        create_backend("onnxruntime", threads=1, provider="NoSuchExecutionProvider").load(path)


def test_multistream_samples_per_query_override_is_reported(tmp_path, photos, cache_dir):
    run = tmp_path / "run"
    done = run_harness(run, "--backend", "null", "--scenario", "MultiStream", "--samples-per-query", "4",
                       "--dataset-path", str(photos), "--cache-dir", str(cache_dir), "--time", "1")
    assert done.returncode == 0, done.stderr
    result = read_result(run)
    assert result["loadgen"]["samples_per_query"] == 4
    assert any("samples per query 4 differs from the rules' 8" in r for r in result["invalid_reasons"])


def test_inference_failure_during_the_test_completes_the_samples_and_fails_the_run(
        tmp_path, photos, cache_dir, monkeypatch):
    """A backend that fails on batches (after a good warm-up) must not hang LoadGen; the run fails."""
    from harness import backends
    from harness.errors import ModelError

    class FailsOnBatches(backends.NullBackend):
        def predict(self, batch):
            if len(batch) == 2:  # the Offline tail batch: 6 samples at max batch 4 -> 4 + 2
                raise RuntimeError("kernel exploded on a batch of two")
            return super().predict(batch)

    monkeypatch.setitem(backends.BACKENDS, "null", FailsOnBatches)
    args = cli.parse_args(["--backend", "null", "--scenario", "Offline", "--accuracy", "--max-batchsize", "4",
                           "--dataset-path", str(photos), "--cache-dir", str(cache_dir),
                           "--output", str(tmp_path / "out")], {})
    with pytest.raises(ModelError, match="kernel exploded on a batch of two"):
        cli.run(args)
    entries = json.loads((tmp_path / "out" / "mlperf_log_accuracy.json").read_text())
    assert sorted(e["qsl_idx"] for e in entries) == list(range(6))
    assert sorted(len(e["data"]) for e in entries) == [0, 0, 8, 8, 8, 8]


def test_progress_bar_goes_to_stderr(tmp_path, photos, capsys):
    pytest.importorskip("tqdm")
    from harness.preprocess import CropCache

    CropCache(tmp_path / "cache").ensure(load_dataset(photos).samples, progress=True)
    captured = capsys.readouterr()
    assert "preprocess" in captured.err and captured.out == ""


def test_settings_layer_builtin_conf_then_user_conf_then_options(tmp_path):
    import mlperf_loadgen as lg

    from harness.settings import Overrides, build_log_settings, build_test_settings

    conf = tmp_path / "user.conf"
    conf.write_text("*.Offline.target_qps = 40\n*.Offline.min_duration = 5000\n")
    settings, rules, _ = build_test_settings("resnet50", "Offline", accuracy=False, user_conf=conf,
                                          overrides=Overrides(), total_samples=10)
    assert (rules.min_duration_ms, rules.min_query_count, rules.performance_sample_count) == (600000, 24576, 1024)
    assert rules.qsl_rng_seed != 0 and rules.server_target_latency_ns == 15_000_000
    assert settings.offline_expected_qps == 40 and settings.min_duration_ms == 5000
    assert settings.performance_sample_count_override == 10  # capped at the dataset
    assert settings.mode == lg.TestMode.PerformanceOnly and settings.scenario == lg.TestScenario.Offline
    settings, _, _ = build_test_settings("resnet50", "Offline", accuracy=True, user_conf=conf, total_samples=5000,
                                      overrides=Overrides(qps=50, time_s=2, count=64))
    assert settings.offline_expected_qps == 50 and settings.min_duration_ms == 2000
    # --count bounds the run, so no duration cap cuts it short of that count
    assert settings.max_duration_ms == 0 and (settings.min_query_count, settings.max_query_count) == (64, 64)
    assert settings.performance_sample_count_override == 1024 and settings.mode == lg.TestMode.AccuracyOnly
    settings, _, _ = build_test_settings("resnet50", "SingleStream", accuracy=False, user_conf=None,
                                      total_samples=5000, overrides=Overrides(time_s=2))
    assert settings.min_duration_ms == 2000 and settings.max_duration_ms == 4500  # --time alone: a capped run
    settings, rules, _ = build_test_settings("resnet50", "MultiStream", accuracy=False, user_conf=None,
                                          total_samples=5000,
                                          overrides=Overrides(max_latency_s=0.1, samples_per_query=4))
    assert rules.min_query_count == 662 and rules.multi_stream_samples_per_query == 8
    assert settings.server_target_latency_ns == 100_000_000 and settings.multi_stream_samples_per_query == 4
    with pytest.raises(UsageError, match="--time"):
        build_test_settings("resnet50", "Server", accuracy=False, user_conf=None, total_samples=5,
                            overrides=Overrides(time_s=-1))
    log_settings = build_log_settings(tmp_path / "new" / "dir")
    assert (tmp_path / "new" / "dir").is_dir() and log_settings.enable_trace is False
    assert build_log_settings(tmp_path, trace=True).enable_trace is True


def test_rules_v1_0_apply_the_round_over_the_user_conf_and_name_what_loadgen_6_cannot(tmp_path, photos, cache_dir):
    run = tmp_path / "run"
    done = run_harness(run, "--backend", "null", "--scenario", "MultiStream", "--dataset-path", str(photos),
                       "--cache-dir", str(cache_dir), "--time", "1", "--count", "8", "--rules", "v1.0")
    assert done.returncode == 0, done.stderr
    result = read_result(run)
    assert result["mlperf_rules"]["version"] == "v1.0" and "rules v1.0" in done.stdout
    assert "min_query_count 270336" in result["mlperf_rules"]["applied"]
    # the program's user.conf expects 320 ms per MultiStream query; v1.0's 50 ms bound replaces it
    assert result["requested_settings"]["multi_stream_expected_latency_ns"] == 50_000_000
    assert result["rules"]["min_query_count"] == 270_336
    assert result["metric"]["name"] == "samples_per_query" and result["metric"]["value"] == 8
    assert result["metric_v6_1"]["name"] == "p99_latency_ms"
    reasons = result["invalid_reasons"]
    assert any("LoadGen 6 ignores seed overrides, qsl_rng_seed" in r for r in reasons)
    assert any("back to back" in r for r in reasons)
    assert any("queries run 8 is below the rules' 270,336" in r for r in reasons)


def test_an_unknown_rules_version_is_a_usage_error(tmp_path, photos, cache_dir):
    done = run_harness(tmp_path / "run", "--backend", "null", "--dataset-path", str(photos), "--rules", "v0.5")
    assert done.returncode == 2 and "--rules" in done.stderr
