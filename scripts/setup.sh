#!/usr/bin/env bash
# Install ckx in editable mode with the MLPerf runtime, PyTorch (CPU), TensorFlow (CPU), Apache TVM, OpenVINO,
# the embedded offline defaults and Ray (for sweeps over a cluster).
# torch is pinned to the CPU build first: an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[mlperf,torch,tf,tvm,openvino,embedded,ray,test]"
python -m ckx version
