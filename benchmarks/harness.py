"""Benchmark of the image-classification harness: its overhead against raw framework loops."""
# Measures, in one run, with a synthetic ResNet50 v1.5 (seeded weights, exported by the harness's own
# code, fp32) on ``--threads`` threads:
#
# - onnxruntime: raw batched throughput (no LoadGen) vs the harness's Offline samples/s;
#   raw batch-1 median latency vs the harness's SingleStream p90;
# - the highest Server QPS the null backend sustains VALID at the 15 ms p99 bound (searched upward);
# - pytorch: the same two comparisons against a raw eager loop (channels_last, inference_mode);
# - with ``--backends``: TensorFlow (the same weights converted by harness.onnx_to_tf) Offline against a raw
#   TF loop; TVM Offline, untuned and tuned (``--tvm-trials``), against raw onnxruntime fp32; onnxruntime
#   int8 (QDQ by harness.quantize) Offline against the harness's fp32 Offline; PyTorch bf16 against fp32
#   (where the CPU has bf16); OpenVINO int8, bf16 and f32 Offline against OpenVINO's own raw loop.
#
# Each figure is the median of ``--reps`` repetitions; raw loops run before and after each harness run. Prints a
# Markdown table and writes it to benchmarks/out/harness.md. ``--quick`` fits in a few minutes.
# Usage: ``python benchmarks/harness.py [--quick] [--reps N] [--skip-torch] [--skip-server] [--backends]``
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "programs" / "image-classification-base"
OUT = ROOT / "benchmarks" / "out"
sys.path.insert(0, str(BASE))

PEAK_GFLOPS = 232.0  # FMA peak of two Zen 4 cores (MLPERF.md)
RESNET50_GFLOP = 8.18  # per image
SERVER_BOUND_MS = 15.0


def make_dataset(directory: Path) -> Path:
    """Real photos shipped by scikit-image / matplotlib, with a val_map (labels do not matter here)."""
    import importlib.util

    import cv2

    skimage_data = Path(list(importlib.util.find_spec("skimage").submodule_search_locations)[0]) / "data"
    mpl_data = Path(list(importlib.util.find_spec("matplotlib").submodule_search_locations)[0]) / "mpl-data"
    sources = [skimage_data / n for n in ("chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                                          "camera.png", "astronaut.png", "horse.png")]
    sources.append(mpl_data / "sample_data" / "grace_hopper.jpg")
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, source in enumerate(sources):
        name = f"img{i:02d}.jpg"
        cv2.imwrite(str(directory / name), cv2.imread(str(source)))
        lines.append(f"{name} {i}")
    (directory / "val_map.txt").write_text("\n".join(lines) + "\n")
    return directory


def make_models(directory: Path) -> tuple[Path, Path]:
    """The seeded ResNet50 as ONNX (our exporter) and as a state_dict."""
    import torch

    from harness.resnet50 import build_resnet50, export_onnx, seeded_state_dict

    model = build_resnet50()
    model.load_state_dict(seeded_state_dict(0))
    onnx_path = export_onnx(model, directory / "resnet50_seeded.onnx")
    pth_path = directory / "resnet50_seeded.pth"
    torch.save(model.state_dict(), pth_path)
    return onnx_path, pth_path


def run_harness(work: Path, *args: str, timeout: int = 900) -> dict:
    """One ``python -m harness`` run in a fresh directory; returns its result.json."""
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    env = {k: v for k, v in os.environ.items() if k != "EXTRA_OPS"}
    env["PYTHONPATH"] = str(BASE)
    done = subprocess.run([sys.executable, "-m", "harness", *args], cwd=run_dir, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"harness failed ({done.returncode}): {done.stderr[-2000:]}")
    result = json.loads((run_dir / "result.json").read_text())
    shutil.rmtree(run_dir, ignore_errors=True)
    return result


def real_batch(dataset: Path, size: int) -> np.ndarray:
    """``size`` inputs made from the benchmark's photos exactly as the harness makes them (NCHW).

    The raw loops must see the same data as the harness: run time depends on it a little
    (real photos through random weights give other activations than Gaussian noise).
    """
    from harness.dataset import load_dataset
    from harness.preprocess import crop_image, normalise

    samples = load_dataset(dataset).samples
    crops = np.stack([crop_image(samples[i % len(samples)].path) for i in range(size)])
    return normalise(crops, "mlperf-resnet50", "NCHW")


def ort_session(model: Path, threads: int) -> "onnxruntime.InferenceSession":
    """An onnxruntime session configured as the harness configures it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def raw_ort_throughput(model: Path, threads: int, x: np.ndarray, samples: int) -> float:
    """Images/s of a plain batched onnxruntime loop (no LoadGen) on the batch ``x``."""
    session = ort_session(model, threads)
    batch = len(x)
    session.run(None, {"input_tensor:0": x})
    batches = max(1, samples // batch)
    start = time.perf_counter()
    for _ in range(batches):
        session.run(None, {"input_tensor:0": x})
    elapsed = time.perf_counter() - start
    del session
    return batches * batch / elapsed


def raw_ort_latency(model: Path, threads: int, images: np.ndarray, runs: int) -> tuple[float, float]:
    """Median and p90 batch-1 latency (ms) of a plain onnxruntime loop over ``images`` in turn."""
    session = ort_session(model, threads)
    for i in range(3):
        session.run(None, {"input_tensor:0": images[i % len(images)][None]})
    times = []
    for i in range(runs):
        x = images[i % len(images)][None]
        start = time.perf_counter()
        session.run(None, {"input_tensor:0": x})
        times.append(time.perf_counter() - start)
    del session
    return float(np.median(times) * 1000), float(np.percentile(times, 90) * 1000)


def torch_model(pth: Path, threads: int) -> "torch.nn.Module":
    """Our ResNet50 with the seeded weights, eval, channels_last."""
    import torch

    from harness.resnet50 import build_resnet50

    torch.set_num_threads(threads)
    model = build_resnet50()
    model.load_state_dict(torch.load(pth, map_location="cpu", weights_only=True))
    return model.eval().to(memory_format=torch.channels_last)


def raw_torch_throughput(pth: Path, threads: int, batch_input: np.ndarray, samples: int) -> float:
    """Images/s of a plain batched eager PyTorch loop on the batch ``batch_input``."""
    import torch

    model = torch_model(pth, threads)
    batch = len(batch_input)
    x = torch.from_numpy(batch_input).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(x)
        batches = max(1, samples // batch)
        start = time.perf_counter()
        for _ in range(batches):
            model(x).argmax(1)
        elapsed = time.perf_counter() - start
    return batches * batch / elapsed


def raw_torch_latency(pth: Path, threads: int, images: np.ndarray, runs: int) -> tuple[float, float]:
    """Median and p90 batch-1 latency (ms) of a plain eager PyTorch loop over ``images`` in turn."""
    import torch

    model = torch_model(pth, threads)
    inputs = [torch.from_numpy(images[i:i + 1]) for i in range(len(images))]
    times = []
    with torch.inference_mode():
        for i in range(3):
            model(inputs[i % len(inputs)].contiguous(memory_format=torch.channels_last))
        for i in range(runs):
            start = time.perf_counter()
            model(inputs[i % len(inputs)].contiguous(memory_format=torch.channels_last)).argmax(1)
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000), float(np.percentile(times, 90) * 1000)


def harness_offline(work: Path, common: list[str], backend: list[str], batch: int, samples: int) -> float:
    """The harness's Offline samples/s over ``samples`` samples in batches of ``batch``."""
    result = run_harness(work, *common, *backend, "--scenario", "Offline", "--max-batchsize", str(batch),
                         "--count", str(samples), "--time", "1", "--qps", "1")
    return float(result["samples_per_second"])


def harness_singlestream(work: Path, common: list[str], backend: list[str], queries: int) -> float:
    """The harness's SingleStream p90 latency (ms) over ``queries`` queries."""
    result = run_harness(work, *common, *backend, "--scenario", "SingleStream", "--count", str(queries),
                         "--time", "1")
    return float(result["latency_ms"]["p90"])


def server_search(work: Path, common: list[str], seconds: float, start_qps: float) -> tuple[float, list]:
    """Raise the Server target QPS (x1.25 steps) until LoadGen says INVALID; the last VALID one wins."""
    best, trail, qps = 0.0, [], start_qps
    failures = 0
    while qps < 1_000_000:
        result = run_harness(work, *common, "--backend", "null", "--scenario", "Server", "--qps", f"{qps:.0f}",
                             "--time", str(seconds), "--max-latency", str(SERVER_BOUND_MS / 1000))
        valid = bool(result["valid"])
        trail.append((qps, valid, result["latency_ms"].get("p99"), result.get("completed_qps")))
        if valid:
            best, failures = max(best, qps), 0
        else:
            failures += 1
            if failures >= 2:  # one retry: a neighbour's burst should not end the search
                break
            continue
        qps *= 1.25
    return best, trail


def timed_loop(run, batches: int) -> float:
    """Seconds per call of ``run()`` over ``batches`` calls after one warm-up call."""
    run()
    start = time.perf_counter()
    for _ in range(batches):
        run()
    return (time.perf_counter() - start) / batches


def raw_tf_throughput(graph: Path, threads: int, x_nhwc: np.ndarray, samples: int) -> float:
    """Images/s of a plain TensorFlow loop on the frozen graph (threads as the harness sets them)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph.read_bytes())
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    fn = wrapped.prune(wrapped.graph.as_graph_element("input_tensor:0"), wrapped.graph.as_graph_element("ArgMax:0"))
    x = tf.constant(x_nhwc)
    return len(x_nhwc) / timed_loop(lambda: fn(x).numpy(), max(1, samples // len(x_nhwc)))


def raw_ov_throughput(model: Path, threads: int, x: np.ndarray, samples: int, hint: str | None) -> float:
    """Images/s of OpenVINO's own throughput loop: the THROUGHPUT hint's streams, each batch split over
    OPTIMAL_NUMBER_OF_INFER_REQUESTS asynchronous requests (as benchmark_app runs them), ``threads`` threads.

    One synchronous request on a THROUGHPUT-compiled model would keep only one of its streams busy.
    """
    import openvino as ov

    config = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_NUM_THREADS": threads}
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    compiled = ov.Core().compile_model(str(model), "CPU", config)
    streams = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    parts = [np.ascontiguousarray(p) for p in np.array_split(x, min(streams, len(x)))]
    queue = ov.AsyncInferQueue(compiled, len(parts))

    def run() -> None:
        for part in parts:
            queue.start_async({0: part}, share_inputs=True)
        queue.wait_all()

    return len(x) / timed_loop(run, max(1, samples // len(x)))


def raw_torch_bf16_throughput(pth: Path, threads: int, batch_input: np.ndarray, samples: int) -> float:
    """Images/s of the eager loop under bf16 autocast."""
    import torch

    model = torch_model(pth, threads)
    x = torch.from_numpy(batch_input).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        return len(batch_input) / timed_loop(lambda: model(x).argmax(1), max(1, samples // len(batch_input)))


def backend_rows(work: Path, dataset: Path, onnx_path: Path, pth_path: Path, common: list[str], args: argparse.Namespace,
                 reps: int, samples: int) -> list[tuple[str, str, str, str, str]]:
    """The rows of the TensorFlow, TVM, int8, bf16 and OpenVINO comparisons (medians of ``reps``)."""
    from harness import onnx_to_tf, quantize
    from harness.cpu import has_bf16, has_vnni

    graph = work / "resnet50_seeded.pb"
    graph.write_bytes(onnx_to_tf.convert(onnx_path)[0])
    int8_path = work / "resnet50_seeded_int8.onnx"
    calibration = quantize.choose_calibration(dataset, dataset / "val_map.txt", None)
    quantize.quantize(onnx_path, int8_path, quantize.calibration_inputs(calibration, "mlperf-resnet50", variants=8),
                      reduce_range=not has_vnni())
    x = real_batch(dataset, args.batch)
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    ort = ["--backend", "onnxruntime", "--model", str(onnx_path)]
    offline = {
        "tf": ["--backend", "tensorflow", "--model", str(graph), "--data-layout", "NHWC", "--output-name", "ArgMax:0"],
        "tvm": ["--backend", "tvm", "--model", str(onnx_path), "--compiled-cache", str(work / "compiled")],
        "tvm_tuned": ["--backend", "tvm", "--model", str(onnx_path), "--compiled-cache", str(work / "compiled"),
                      "--tune-trials", str(args.tvm_trials)],
        "ort_int8": ["--backend", "onnxruntime", "--model", str(int8_path), "--precision", "int8"],
        "ov_int8": ["--backend", "openvino", "--model", str(int8_path), "--precision", "int8"],
        "ov_f32": ["--backend", "openvino", "--model", str(onnx_path)],
    }
    if has_bf16():
        offline["ov_bf16"] = ["--backend", "openvino", "--model", str(onnx_path), "--precision", "bf16"]
        offline["pt_bf16"] = ["--backend", "pytorch", "--model", str(pth_path), "--precision", "bf16"]
        offline["pt_fp32"] = ["--backend", "pytorch", "--model", str(pth_path)]
    if not args.tvm_trials:
        offline.pop("tvm_tuned")
    raw_of = {
        "ort": lambda: raw_ort_throughput(onnx_path, args.threads, x, samples),
        "tf": lambda: raw_tf_throughput(graph, args.threads, x_nhwc, samples),
        "ov_int8": lambda: raw_ov_throughput(int8_path, args.threads, x, samples, None),
        "ov_f32": lambda: raw_ov_throughput(onnx_path, args.threads, x, samples, "f32"),
        "ov_bf16": lambda: raw_ov_throughput(onnx_path, args.threads, x, samples, "bf16"),
        "pt_bf16": lambda: raw_torch_bf16_throughput(pth_path, args.threads, x, samples),
    }
    slow = {"tvm": max(args.batch, samples // 8), "tvm_tuned": max(args.batch, samples // 4)}  # untuned TVM is slow
    harness: dict[str, list[float]] = {k: [] for k in ("ort", *offline)}
    raw: dict[str, list[float]] = {k: [] for k in raw_of if k == "ort" or k in offline}
    if "tvm_tuned" in offline:  # tune once, outside the timed repetitions; the database is reused after
        print(f"tvm: tuning {args.tvm_trials} trials per batch size", file=sys.stderr, flush=True)
        harness_offline(work, common, offline["tvm_tuned"], args.batch, args.batch)
    for rep in range(reps):
        for key in harness:
            if key.startswith("tvm") and rep >= args.tvm_reps:
                continue  # untuned TVM takes minutes a run on two cores
            print(f"[rep {rep + 1}/{reps}] {key}", file=sys.stderr, flush=True)
            before = raw_of[key]() if key in raw else None
            harness[key].append(harness_offline(work, common, ort if key == "ort" else offline[key], args.batch,
                                                slow.get(key, samples)))
            if before is not None:
                raw[key].append((before + raw_of[key]()) / 2)
    m = {k: median(v) for k, v in harness.items()}
    r = {k: median(v) for k, v in raw.items()}
    ort_raw = r["ort"]
    rows = [("TensorFlow Offline (same weights, frozen NHWC graph)", f"raw TF {r['tf']:.2f} img/s",
             f"{m['tf']:.2f} img/s", f"{m['tf'] / r['tf']:.3f}", ">= 0.97 of raw TF"),
            (f"TVM Offline, untuned (llvm, this CPU; {min(reps, args.tvm_reps)} rep)", f"raw onnxruntime fp32 {ort_raw:.2f} img/s",
             f"{m['tvm']:.2f} img/s", f"{m['tvm'] / ort_raw:.3f}", "stated against onnxruntime fp32")]
    if "tvm_tuned" in m:
        rows.append((f"TVM Offline, tuned ({args.tvm_trials} MetaSchedule trials)", f"raw onnxruntime fp32 {ort_raw:.2f} img/s",
                     f"{m['tvm_tuned']:.2f} img/s", f"{m['tvm_tuned'] / ort_raw:.3f}", "goal >= 0.9 of onnxruntime fp32"))
    rows.append((f"onnxruntime int8 Offline (QDQ, per-channel, reduce_range {'off' if has_vnni() else 'on: no VNNI'})",
                 f"harness onnxruntime fp32 {m['ort']:.2f} img/s", f"{m['ort_int8']:.2f} img/s",
                 f"{m['ort_int8'] / m['ort']:.3f}", ">= 3x harness fp32"))
    if "pt_bf16" in m:
        rows.append(("PyTorch bf16 autocast Offline", f"harness PyTorch fp32 {m['pt_fp32']:.2f} img/s",
                     f"{m['pt_bf16']:.2f} img/s", f"{m['pt_bf16'] / m['pt_fp32']:.3f}", ">= 2.5x PyTorch fp32"))
    else:
        rows.append(("PyTorch bf16 autocast Offline", "refused: no AMX / AVX-512 bf16 on this CPU", "-", "-",
                     ">= 2.5x PyTorch fp32"))
    for key, label in (("ov_int8", "OpenVINO int8 (the QDQ model)"), ("ov_bf16", "OpenVINO bf16 hint"),
                       ("ov_f32", "OpenVINO f32 hint")):
        if key in m:
            rows.append((f"{label} Offline", f"raw OpenVINO {r[key]:.2f} img/s", f"{m[key]:.2f} img/s "
                         f"({m[key] / ort_raw:.2f}x raw onnxruntime fp32)", f"{m[key] / r[key]:.3f}", ">= 0.97 of raw OpenVINO"))
    fastest = max((k for k in m if k != "ort"), key=lambda k: m[k])
    rows.append(("fastest path through ckx", f"raw onnxruntime fp32 {ort_raw:.2f} img/s", f"{fastest}: {m[fastest]:.2f} img/s",
                 f"{m[fastest] / ort_raw:.2f}x", ">= 4.3x onnxruntime fp32 (int8)"))
    return rows


def median(values: list[float]) -> float:
    """The median of ``values``."""
    return float(statistics.median(values))


def main(argv: list[str] | None = None) -> int:
    """Run the measurements, print the Markdown table and write it to benchmarks/out/harness.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and shorter runs (a few minutes)")
    parser.add_argument("--reps", type=int, help="repetitions per figure (default 3, quick 1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="Offline batch size (raw loop and harness)")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--skip-base", action="store_true", help="only the --backends rows")
    parser.add_argument("--backends", action="store_true", help="also TensorFlow, TVM, int8, bf16 and OpenVINO rows")
    parser.add_argument("--tvm-trials", type=int, default=0, help="MetaSchedule trials for the tuned TVM row (0: no row)")
    parser.add_argument("--tvm-reps", type=int, default=3, help="repetitions of the TVM rows (untuned TVM is slow)")
    args = parser.parse_args(argv)
    reps = args.reps or (2 if args.quick else 3)
    offline_samples = 48 if args.quick else 160
    ss_queries = 40 if args.quick else 120
    server_seconds = 3 if args.quick else 10
    began = time.time()

    work = Path(tempfile.mkdtemp(prefix="harness-bench-"))
    try:
        dataset = make_dataset(work / "images")
        onnx_path, pth_path = make_models(work)
        images = real_batch(dataset, 8)
        batch_x = real_batch(dataset, args.batch)
        common = ["--dataset-path", str(dataset), "--cache-dir", str(work / "cache"), "--threads",
                  str(args.threads), "--user-conf", ""]
        ort_args = ["--backend", "onnxruntime", "--model", str(onnx_path)]
        torch_args = ["--backend", "pytorch", "--model", str(pth_path)]
        rows: list[tuple[str, str, str, str, str]] = []

        figures: dict[str, list[float]] = {k: [] for k in (
            "ort_raw_tput", "ort_h_tput", "ort_raw_lat", "ort_raw_lat90", "ort_h_p90",
            "pt_raw_tput", "pt_h_tput", "pt_raw_lat", "pt_raw_lat90", "pt_h_p90")}
        for rep in range(0 if args.skip_base else reps):
            # raw loops run before AND after each harness run and are averaged, so that a neighbour's
            # burst on this shared machine weighs on both sides of a ratio
            print(f"[rep {rep + 1}/{reps}] onnxruntime", file=sys.stderr, flush=True)
            before = raw_ort_throughput(onnx_path, args.threads, batch_x, offline_samples)
            figures["ort_h_tput"].append(harness_offline(work, common, ort_args, args.batch, offline_samples))
            after = raw_ort_throughput(onnx_path, args.threads, batch_x, offline_samples)
            figures["ort_raw_tput"].append((before + after) / 2)
            before_l = raw_ort_latency(onnx_path, args.threads, images, ss_queries)
            figures["ort_h_p90"].append(harness_singlestream(work, common, ort_args, ss_queries))
            after_l = raw_ort_latency(onnx_path, args.threads, images, ss_queries)
            figures["ort_raw_lat"].append((before_l[0] + after_l[0]) / 2)
            figures["ort_raw_lat90"].append((before_l[1] + after_l[1]) / 2)
            if not args.skip_torch:
                print(f"[rep {rep + 1}/{reps}] pytorch", file=sys.stderr, flush=True)
                n = offline_samples // 2
                before = raw_torch_throughput(pth_path, args.threads, batch_x, n)
                figures["pt_h_tput"].append(harness_offline(work, common, torch_args, args.batch, n))
                after = raw_torch_throughput(pth_path, args.threads, batch_x, n)
                figures["pt_raw_tput"].append((before + after) / 2)
                before_l = raw_torch_latency(pth_path, args.threads, images, ss_queries // 2)
                figures["pt_h_p90"].append(harness_singlestream(work, common, torch_args, ss_queries // 2))
                after_l = raw_torch_latency(pth_path, args.threads, images, ss_queries // 2)
                figures["pt_raw_lat"].append((before_l[0] + after_l[0]) / 2)
                figures["pt_raw_lat90"].append((before_l[1] + after_l[1]) / 2)

        def peak(samples_per_s: float) -> str:
            return f"{100 * samples_per_s * RESNET50_GFLOP / PEAK_GFLOPS:.0f}%"

        for fw, key in (("onnxruntime", "ort"), ("pytorch", "pt")):
            if not figures[f"{key}_raw_tput"]:
                continue
            raw_t, h_t = median(figures[f"{key}_raw_tput"]), median(figures[f"{key}_h_tput"])
            raw_l, raw_l90 = median(figures[f"{key}_raw_lat"]), median(figures[f"{key}_raw_lat90"])
            h_p90 = median(figures[f"{key}_h_p90"])
            rows.append((f"{fw} Offline throughput (batch {args.batch})", f"{raw_t:.2f} img/s ({peak(raw_t)} of peak)",
                         f"{h_t:.2f} img/s ({peak(h_t)} of peak)", f"{h_t / raw_t:.3f}", ">= 0.97"))
            rows.append((f"{fw} SingleStream latency", f"median {raw_l:.1f} ms (p90 {raw_l90:.1f})",
                         f"p90 {h_p90:.1f} ms ({peak(1000 / h_p90)} of peak; {h_p90 / raw_l90:.3f} x raw p90)",
                         f"{h_p90 / raw_l:.3f}", "<= 1.05"))
        if args.backends:
            rows += backend_rows(work, dataset, onnx_path, pth_path, common, args, reps, offline_samples)
        if not args.skip_server and not args.skip_base:
            print("server search (null backend)", file=sys.stderr, flush=True)
            best, trail = server_search(work, common, server_seconds, 20000)
            tried = ", ".join(f"{q / 1000:.0f}k{'' if ok else ' INVALID'}" for q, ok, _, _ in trail)
            rows.append(("null Server QPS VALID at p99 <= 15 ms", "LoadGen alone: ~160k (MLPERF.md)",
                         f"{best:,.0f} QPS (tried {tried})", "", ">= 30,000"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        f"# Harness benchmark ({'quick' if args.quick else 'full'}, {reps} rep(s), {args.threads} threads, "
        f"median of reps; {time.strftime('%Y-%m-%d %H:%M')}, {time.time() - began:.0f} s)",
        "",
        "| measure | raw framework loop | harness under LoadGen | ratio | target |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    lines += ["", f"Peak: {PEAK_GFLOPS:.0f} GFLOP/s on two cores; ResNet50 = {RESNET50_GFLOP} GFLOP/image "
              f"(floor ~{1000 * RESNET50_GFLOP / PEAK_GFLOPS:.0f} ms/image, ~{PEAK_GFLOPS / RESNET50_GFLOP:.0f} img/s)."]
    table = "\n".join(lines) + "\n"
    print(table)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "harness.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
