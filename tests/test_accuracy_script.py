"""``python -m harness.accuracy`` on crafted LoadGen accuracy logs and val_maps."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BASE = Path(__file__).resolve().parent.parent / "programs" / "image-classification-base"
sys.path.insert(0, str(BASE))

from harness import accuracy  # noqa: E402
from harness.errors import FormatError  # noqa: E402


def hex_of(value, dtype=np.float32) -> str:
    """The data field LoadGen writes for one response holding ``value``."""
    return np.array([value], dtype=dtype).tobytes().hex().upper()


def write_log(path: Path, entries: list[tuple[int, str]]) -> Path:
    records = [{"seq_id": i, "qsl_idx": idx, "data": data} for i, (idx, data) in enumerate(entries)]
    path.write_text(json.dumps(records, indent=0))
    return path


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(BASE))
    return subprocess.run([sys.executable, "-m", "harness.accuracy", *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


def run_inprocess(capsys, *args: str) -> tuple[int, str, str]:
    """The same entry point in this process (fast): exit status, stdout, stderr."""
    code = accuracy.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def val_map(tmp_path) -> Path:
    path = tmp_path / "val_map.txt"
    path.write_text("a.JPEG 65\nb.JPEG 970\n\nc.JPEG 281,282,285\nd.JPEG 0\n")
    return path


def test_prints_the_official_line_and_deduplicates_by_qsl_idx(tmp_path, val_map):
    log = write_log(tmp_path / "mlperf_log_accuracy.json", [
        (0, hex_of(65)),      # right
        (1, hex_of(3)),       # wrong
        (0, hex_of(999)),     # duplicate of 0: ignored (the first one counts)
        (2, hex_of(282)),     # in the label set: right
        (3, hex_of(0)),       # right
        (3, hex_of(0)),       # duplicate
    ])
    done = run_script("--mlperf-accuracy-file", str(log), "--val-map", str(val_map))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "accuracy=75.000%, good=3, total=4\n"


def test_three_decimals_and_output_file(tmp_path, val_map):
    log = write_log(tmp_path / "acc.json", [(0, hex_of(65)), (1, hex_of(970)), (2, hex_of(7))])
    out = tmp_path / "accuracy.txt"
    assert accuracy.main(["--mlperf-accuracy-file", str(log), "--val-map", str(val_map), "--output", str(out)]) == 0
    assert out.read_text() == "accuracy=66.667%, good=2, total=3\n"


def test_label_sets_accept_any_member(tmp_path, val_map):
    for predicted, good in ((281, 1), (285, 1), (283, 0)):
        log = write_log(tmp_path / f"acc{predicted}.json", [(2, hex_of(predicted))])
        result = accuracy.compute_accuracy(log, val_map)
        assert (result.good, result.total) == (good, 1)


def test_other_dtypes(tmp_path, val_map, capsys):
    log = write_log(tmp_path / "acc.json", [(0, hex_of(65, np.int64)), (1, hex_of(970, np.int64))])
    code, out, _ = run_inprocess(capsys, "--mlperf-accuracy-file", str(log), "--val-map", str(val_map),
                                 "--dtype", "int64")
    assert code == 0 and out == "accuracy=100.000%, good=2, total=2\n"


def test_extra_bytes_after_the_class_are_ignored(tmp_path, val_map):
    data = hex_of(970) + np.array([0.5, 0.25], dtype=np.float32).tobytes().hex()
    result = accuracy.compute_accuracy(write_log(tmp_path / "acc.json", [(1, data)]), val_map)
    assert result.good == 1


def test_empty_response_counts_as_wrong(tmp_path, val_map):
    result = accuracy.compute_accuracy(write_log(tmp_path / "acc.json", [(0, ""), (1, hex_of(970))]), val_map)
    assert (result.good, result.total, result.empty) == (1, 2, 1)


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "not valid JSON"),
    ('{"qsl_idx": 0}', "JSON array"),
    ('[{"seq_id": 0, "data": "00"}]', "lacks qsl_idx"),
    ('[{"seq_id": 0, "qsl_idx": -1, "data": "00"}]', "bad qsl_idx"),
    ('[{"seq_id": 0, "qsl_idx": 0, "data": "zz"}]', "non-hex"),
    ('[{"seq_id": 0, "qsl_idx": 0, "data": "0000"}]', "fewer than one float32"),
    ('[{"seq_id": 0, "qsl_idx": 9, "data": "00008242"}]', "beyond the 4 entries"),
    ("[]", "no entries"),
])
def test_malformed_logs_name_the_file(tmp_path, val_map, capsys, content, fragment):
    log = tmp_path / "broken_log.json"
    log.write_text(content)
    code, out, err = run_inprocess(capsys, "--mlperf-accuracy-file", str(log), "--val-map", str(val_map))
    assert code != 0
    assert "broken_log.json" in err and fragment in err
    assert out == ""


def test_malformed_log_from_the_command_line_has_no_traceback(tmp_path, val_map):
    log = tmp_path / "broken_log.json"
    log.write_text("[{]")
    done = run_script("--mlperf-accuracy-file", str(log), "--val-map", str(val_map))
    assert done.returncode == 1
    assert "broken_log.json" in done.stderr and "Traceback" not in done.stderr


def test_nan_prediction_is_rejected(tmp_path, val_map):
    log = write_log(tmp_path / "nan_log.json", [(0, hex_of(np.nan))])
    with pytest.raises(FormatError, match="nan_log.json"):
        accuracy.compute_accuracy(log, val_map)


@pytest.mark.parametrize("line, fragment", [
    ("e.JPEG", "two fields"),
    ("e.JPEG 1 2", "two fields"),
    ("e.JPEG -4", "non-negative integer"),
    ("e.JPEG 1,,2", "non-negative integer"),
    ("e.JPEG cat", "non-negative integer"),
])
def test_malformed_val_map_names_file_and_line(tmp_path, val_map, capsys, line, fragment):
    bad_map = tmp_path / "bad_map.txt"
    bad_map.write_text(val_map.read_text() + line + "\n")
    log = write_log(tmp_path / "acc.json", [(0, hex_of(65))])
    code, out, err = run_inprocess(capsys, "--mlperf-accuracy-file", str(log), "--val-map", str(bad_map))
    assert code != 0 and out == ""
    assert "bad_map.txt:6" in err and fragment in err


def test_missing_files_exit_3_naming_them(tmp_path, val_map, capsys):
    code, _, err = run_inprocess(capsys, "--mlperf-accuracy-file", str(tmp_path / "nowhere.json"),
                                 "--val-map", str(val_map))
    assert code == 3 and "nowhere.json" in err
    log = write_log(tmp_path / "acc.json", [(0, hex_of(65))])
    code, _, err = run_inprocess(capsys, "--mlperf-accuracy-file", str(log), "--val-map", str(tmp_path / "no_map.txt"))
    assert code == 3 and "no_map.txt" in err


def test_unwritable_output_is_an_error(tmp_path, val_map, capsys):
    log = write_log(tmp_path / "acc.json", [(0, hex_of(65))])
    code = accuracy.main(["--mlperf-accuracy-file", str(log), "--val-map", str(val_map),
                          "--output", str(tmp_path / "no" / "such" / "dir" / "accuracy.txt")])
    assert code != 0
    assert "accuracy.txt" in capsys.readouterr().err
