"""Every backend against the others on one set of weights, and each backend's refusals (missing runtime, bf16)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BASE = Path(__file__).resolve().parent.parent / "programs" / "image-classification-base"
if str(BASE) not in sys.path:
    sys.path.insert(0, str(BASE))

LOGIT_TOLERANCE = 1e-3
FP32_BACKENDS = ("onnxruntime", "pytorch", "tensorflow", "tvm", "openvino")


def _photos() -> np.ndarray:
    """Real photos (scikit-image's) plus a seeded noise image, as uint8 224x224 crops."""
    skimage_data = pytest.importorskip("skimage.data")
    from harness.preprocess import centre_crop, resize_shorter_side

    images = [skimage_data.chelsea(), skimage_data.coffee(), skimage_data.rocket()]
    crops = [np.ascontiguousarray(centre_crop(resize_shorter_side(image, 256), 224)) for image in images]
    noise = np.random.default_rng(3).integers(0, 256, size=(1, 224, 224, 3), dtype=np.uint8)
    return np.concatenate([np.stack(crops), noise])


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The seeded ResNet50 v1.5 (seed 1) as a state_dict, an ONNX file with logits out, and a frozen TF graph."""
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    from harness import onnx_to_tf, resnet50

    directory = tmp_path_factory.mktemp("same-weights")
    state = resnet50.seeded_state_dict(1)
    model = resnet50.build_resnet50()
    model.load_state_dict(state, strict=True)
    paths = {"pytorch": resnet50.save_state_dict(state, directory / "resnet50.pth")}
    paths["onnx"] = resnet50.export_onnx(model, directory / "resnet50.onnx", output_name="logits", softmax=False)
    graph, _ = onnx_to_tf.convert(paths["onnx"])
    paths["tensorflow"] = directory / "resnet50.pb"
    paths["tensorflow"].write_bytes(graph)
    return paths


def _load(name: str, models: dict[str, Path], tmp_path: Path, **options):
    from harness.backends import create_backend

    layout = "NHWC" if name == "tensorflow" else "NCHW"
    output = {"tensorflow": "logits:0", "pytorch": None}.get(name, "logits")
    backend = create_backend(name, threads=2, layout=layout, output_name=output, compiled_cache=tmp_path, **options)
    backend.load(models.get(name, models["onnx"]))
    return backend


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    """One compiled-model cache for the module: TVM compiles ResNet50 once per batch size."""
    return tmp_path_factory.mktemp("compiled")


@pytest.mark.slow
def test_all_fp32_backends_agree_on_top1_and_logits_for_the_same_weights(models, compiled):
    from harness.preprocess import normalise

    crops = _photos()
    nchw, nhwc = normalise(crops, "mlperf-resnet50", "NCHW"), normalise(crops, "mlperf-resnet50", "NHWC")
    logits = {}
    for name in FP32_BACKENDS:
        backend = _load(name, models, compiled)
        logits[name] = backend.outputs(nhwc if name == "tensorflow" else nchw).reshape(len(crops), -1)
    reference = logits["onnxruntime"]
    assert len(set(reference.argmax(1))) > 1, "the seeded model must not give every image the same class"
    for name, values in logits.items():
        assert np.array_equal(values.argmax(1), reference.argmax(1)), f"{name} top-1 differs from onnxruntime"
        difference = float(np.abs(values - reference).max())
        assert difference <= LOGIT_TOLERANCE, f"{name} logits differ from onnxruntime by {difference:.3g}"


def _tiny_onnx(path: Path) -> Path:
    """A one-convolution classifier (3x16x16 in, 4 scores out) with seeded weights."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(5).standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("GlobalAveragePool", ["c"], ["g"]), helper.make_node("Flatten", ["g"], ["scores"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.slow
def test_tvm_reuses_its_compiled_library_for_the_same_model_target_and_batch(tmp_path):
    pytest.importorskip("tvm")
    from harness.backends import create_backend

    model = _tiny_onnx(tmp_path / "tiny.onnx")
    batch = np.random.default_rng(6).standard_normal((2, 3, 16, 16)).astype(np.float32)
    runs = []
    for _ in range(2):
        backend = create_backend("tvm", threads=1, compiled_cache=tmp_path / "cache")
        backend.load(model)
        backend.warmup((3, 16, 16), [2])
        runs.append(backend)
    assert runs[0].compiled_now == [2] and runs[1].compiled_now == []
    assert np.array_equal(runs[0].outputs(batch), runs[1].outputs(batch))
    assert len(list((tmp_path / "cache" / "tvm").glob("*-b2-t0-*.so"))) == 1


@pytest.mark.parametrize(("backend", "module", "extra"), [
    ("tensorflow", "tensorflow", "tf"), ("tvm", "tvm", "tvm"), ("openvino", "openvino", "openvino"),
    ("pytorch", "torch", "torch"), ("onnxruntime", "onnxruntime", "mlperf"),
])
def test_a_backend_whose_runtime_is_missing_names_the_extra_to_install(backend, module, extra, tmp_path,
                                                                        monkeypatch):
    from harness.backends import create_backend
    from harness.errors import RuntimeMissing

    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read: the runtime is missing first")
    monkeypatch.setitem(sys.modules, module, None)  # an absent package: importing it raises ImportError
    with pytest.raises(RuntimeMissing) as caught:
        create_backend(backend, threads=1).load(model)
    assert f"ckx[{extra}]" in caught.value.hint and module in str(caught.value)


def test_pytorch_bf16_runs_only_where_the_cpu_has_amx_or_avx512_bf16(tmp_path):
    torch = pytest.importorskip("torch")
    from harness.backends import create_backend
    from harness.cpu import has_bf16
    from harness.errors import PrecisionUnsupported

    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    path = tmp_path / "tiny.pt"
    torch.jit.trace(tiny, torch.zeros(1, 3, 16, 16)).save(str(path))
    backend = create_backend("pytorch", threads=1, precision="bf16")
    if has_bf16():
        backend.load(path)
        assert backend.predict(np.zeros((2, 3, 16, 16), dtype=np.float32)).shape == (2,)
    else:
        with pytest.raises(PrecisionUnsupported, match="AMX or AVX-512 bf16"):
            backend.load(path)


def test_openvino_refuses_bf16_without_native_support_and_tvm_refuses_int8(tmp_path):
    pytest.importorskip("openvino")
    from harness.backends import create_backend
    from harness.cpu import has_bf16
    from harness.errors import PrecisionUnsupported

    model = tmp_path / "model.onnx"
    model.write_bytes(b"never compiled")
    with pytest.raises(PrecisionUnsupported, match="tvm"):
        create_backend("tvm", threads=1, precision="int8").load(model)
    if not has_bf16():
        with pytest.raises(PrecisionUnsupported, match="bf16"):
            create_backend("openvino", threads=1, precision="bf16").load(model)
