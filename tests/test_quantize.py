"""harness.quantize: the leading compute nodes it keeps in fp32 stay fp32, the others get QDQ int8 weights."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BASE = Path(__file__).resolve().parent.parent / "programs" / "image-classification-base"
sys.path.insert(0, str(BASE))

from harness.quantize import leading_compute_nodes, quantize  # noqa: E402


def _model(path: Path) -> None:
    """input (1,3,8,8) -> conv_a -> relu -> conv_b -> add(conv_b, relu) -> conv_c -> output."""
    rng = np.random.default_rng(0)
    weights = {f"w_{k}": numpy_helper.from_array(rng.normal(0, 0.5, (3, 3, 3, 3)).astype(np.float32), f"w_{k}")
               for k in "abc"}
    nodes = [
        helper.make_node("Conv", ["input", "w_a"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w_b"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["b", "r"], ["s"], name="add"),
        helper.make_node("Conv", ["s", "w_c"], ["output"], name="conv_c", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 3, 8, 8])],
                              list(weights.values()))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _quantized_weight(model: onnx.ModelProto, conv: str) -> bool:
    producers = {o: n for n in model.graph.node for o in n.output}
    node = next(n for n in model.graph.node if n.op_type == "Conv" and n.name.startswith(conv))
    source = producers.get(node.input[1])
    return source is not None and source.op_type == "DequantizeLinear"


def test_leading_compute_nodes_are_the_first_convs_and_adds_in_graph_order(tmp_path):
    _model(tmp_path / "m.onnx")
    assert leading_compute_nodes(tmp_path / "m.onnx", 3) == ["conv_a", "conv_b", "add"]
    assert leading_compute_nodes(tmp_path / "m.onnx", 0) == []
    assert leading_compute_nodes(tmp_path / "m.onnx", 99) == ["conv_a", "conv_b", "add", "conv_c"]


def test_quantize_keeps_the_excluded_prefix_in_fp32_and_quantizes_the_rest(tmp_path):
    _model(tmp_path / "m.onnx")
    inputs = np.random.default_rng(1).normal(0, 1, (16, 3, 8, 8)).astype(np.float32)
    excluded = quantize(tmp_path / "m.onnx", tmp_path / "q.onnx", inputs, reduce_range=True, exclude_first=1)
    assert excluded == ["conv_a"]
    model = onnx.load(tmp_path / "q.onnx")
    assert not _quantized_weight(model, "conv_a")
    assert _quantized_weight(model, "conv_b") and _quantized_weight(model, "conv_c")

    assert quantize(tmp_path / "m.onnx", tmp_path / "all.onnx", inputs, reduce_range=True) == []
    everything = onnx.load(tmp_path / "all.onnx")
    assert all(_quantized_weight(everything, c) for c in ("conv_a", "conv_b", "conv_c"))
