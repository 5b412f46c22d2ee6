"""The MLPerf reference image pipelines to the pixel, a keyed uint8 crop cache, and load-time normalisation."""
# Two pipelines, each matching its reference exactly (a pixel's difference moves top-1 by ~0.3%):
#
# - ``opencv`` (the ONNX/TF models): ``cv2.imread`` (BGR, 3 channels) -> RGB; resize with INTER_AREA so
#   that the shorter side becomes ``int(100 * 224 / 87.5) = 256`` and the other
#   ``int(256 * long / short)``; centre crop 224 at ``left = int((w - 224) / 2)``,
#   ``top = int((h - 224) / 2)``.
# - ``pillow`` (the PyTorch weights; torchvision's F.resize + F.center_crop): the same OpenCV read and
#   RGB array as a PIL image; PIL bilinear resize to the same sizes; centre crop 224 at
#   ``top = int(round((h - 224) / 2.0))``, left likewise (Python's round: halves go to even).
#
# Both crops are still uint8 and are cached as such; normalisation (``mlperf-resnet50``: minus the RGB
# means; ``mlperf-resnet50-pytorch``: ``/ 255``, minus the ImageNet means, divided by the stds, step
# by step in float32 as torchvision's to_tensor and normalize compute it; ``efficientnet-lite``:
# ``(x - 127) / 128``) and the layout change happen when samples are loaded, with identical results.
# Pillow is imported only by the ``pillow`` pipeline.
#
# Cache layout: ``<cache_dir>/crops-<params key>/<image stem>-<source key>.npy``, one file per image.
# The params key hashes the geometry, interpolation, pipeline and library versions; the source key
# hashes the image's absolute path, size and mtime. A changed parameter or image therefore misses the
# cache and is recomputed, and crops of the two pipelines never share a directory. One file per
# image (rather than one memory-mapped array per list) keeps the cache shared between lists and
# ``--count`` values, lets a partial build be resumed, makes each write atomic on its own (temporary
# file + os.replace) and is safe with several runs at once; reading the 1,024 crops of a performance
# run from a warm page cache takes ~0.25 s (outside the timed test).
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from .dataset import Sample
from .errors import FormatError, HarnessError, UsageError
from .fileio import write_atomic

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
INTERPOLATIONS = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}
# Pillow's resampling filters by name (looked up on PIL.Image.Resampling when Pillow is imported).
PIL_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")
# The pipelines and the interpolations each accepts.
LIBRARIES = {"opencv": tuple(INTERPOLATIONS), "pillow": PIL_INTERPOLATIONS}
LAYOUTS = ("NCHW", "NHWC")
INLINE_BELOW = 16  # fewer missing crops than this are computed in-process


@dataclass(frozen=True)
class CropParams:
    """Geometry of the crop: output side, the crop percentage (87.5 -> resize to 256), interpolation
    and pipeline (``opencv``: the MLPerf reference; ``pillow``: torchvision's PIL resize and crop)."""

    size: int = 224
    crop_percent: float = 87.5
    interpolation: str = "area"
    library: str = "opencv"

    def __post_init__(self) -> None:
        if self.library not in LIBRARIES:
            raise UsageError(f"unknown crop pipeline {self.library!r}; known: {', '.join(LIBRARIES)}")
        known = LIBRARIES[self.library]
        if self.interpolation not in known:
            raise UsageError(f"unknown interpolation {self.interpolation!r} for the {self.library} pipeline; "
                             f"known: {', '.join(known)}")
        if self.size <= 0 or not 0 < self.crop_percent <= 100:
            raise UsageError(f"bad crop parameters: size={self.size}, crop_percent={self.crop_percent}")

    @property
    def resize_side(self) -> int:
        """The shorter side after resizing: int(100 * size / crop_percent) (256 for 224 at 87.5%)."""
        return int(100.0 * self.size / self.crop_percent)

    @property
    def key(self) -> str:
        """A short hash of everything that changes the pixels of a crop (library versions included).

        Raises HarnessError for the ``pillow`` pipeline when Pillow is not installed.
        """
        fields: dict[str, object] = {"format": CACHE_FORMAT, "size": self.size, "crop_percent": self.crop_percent,
                                     "interpolation": self.interpolation, "cv2": cv2.__version__}
        if self.library != "opencv":  # the opencv key stays what it always was: existing caches stay valid
            fields.update(library=self.library, pillow=_pillow("the pillow crop pipeline").__version__)
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Profile:
    """Load-time normalisation in float32 (RGB channel order) and the crop geometry it expects.

    Without ``divisor`` and ``std``: ``(x - mean[c]) * scale``. With them (torchvision's to_tensor
    and normalize): ``x / divisor``, then minus ``mean[c]``, then divided by ``std[c]``, one rounded
    float32 step at a time, as torch computes it.
    """

    name: str
    mean: tuple[float, float, float]
    scale: float | None = None
    divisor: float | None = None
    std: tuple[float, float, float] | None = None
    crop: CropParams = CropParams()


PROFILES = {
    "mlperf-resnet50": Profile("mlperf-resnet50", (123.68, 116.78, 103.94)),
    "mlperf-resnet50-pytorch": Profile(
        "mlperf-resnet50-pytorch", (0.485, 0.456, 0.406), divisor=255.0, std=(0.229, 0.224, 0.225),
        crop=CropParams(interpolation="bilinear", library="pillow"),
    ),
    "efficientnet-lite": Profile("efficientnet-lite", (127.0, 127.0, 127.0), 1.0 / 128.0),
}


def get_profile(profile: str | Profile) -> Profile:
    """The :class:`Profile` called ``profile`` (a Profile is returned as is); UsageError if unknown."""
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise UsageError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}") from None


def crop_params_for(profile: str | Profile) -> CropParams:
    """The crop geometry ``profile`` expects, after checking that its pipeline's library imports.

    Raises UsageError for an unknown profile, HarnessError naming the profile when it needs Pillow
    and Pillow is not installed.
    """
    prof = get_profile(profile)
    if prof.crop.library == "pillow":
        _pillow(f"profile {prof.name!r} (PIL bilinear resize, as torchvision)")
    return prof.crop


def _pillow(purpose: str) -> ModuleType:
    """``PIL.Image``, imported now; HarnessError saying what needs it and how to install it if missing."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise HarnessError(f"{purpose} needs Pillow, which cannot be imported ({exc}): pip install pillow",
                           hint="pip install pillow") from None
    return Image


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image as uint8 HWC RGB with OpenCV (grey and alpha images become 3 channels).

    Raises FormatError naming the file if OpenCV cannot decode it.
    """
    try:
        data = np.fromfile(os.fspath(path), dtype=np.uint8)
    except OSError as exc:
        raise FormatError(f"cannot read image {path} ({exc.strerror or exc})") from None
    problem = truncation_problem(data)
    if problem:
        raise FormatError(f"image {path} is truncated ({problem})")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise FormatError(f"cannot decode image {path} (empty, damaged or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def truncation_problem(data: np.ndarray) -> str | None:
    """Why an encoded JPEG or PNG is cut short, or None.

    OpenCV decodes a truncated JPEG with only a libjpeg warning on stderr and grey rows where the data
    stopped, so the end markers are checked first: a JPEG must end with EOI (FF D9, trailing padding
    allowed) and a PNG with its IEND chunk. Other formats are left to the decoder.
    """
    head = data[:8].tobytes()
    tail = data[-64:].tobytes()
    if head[:2] == b"\xff\xd8":
        if b"\xff\xd9" not in tail.rstrip(b"\x00\r\n\t "):
            return "no JPEG end-of-image marker"
    elif head == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in tail:
            return "no PNG IEND chunk"
    return None


def resized_shape(height: int, width: int, side: int) -> tuple[int, int]:
    """(new height, new width): the shorter side becomes ``side``, the other ``int(side * long / short)``."""
    if height > width:
        return int(side * height / width), side
    return side, int(side * width / height)


def resize_shorter_side(image: np.ndarray, side: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """Resize so the shorter side is ``side`` and the other ``int(side * long / short)`` (truncated)."""
    new_h, new_w = resized_shape(*image.shape[:2], side)
    return cv2.resize(image, (new_w, new_h), interpolation=interpolation)


def centre_crop(image: np.ndarray, size: int, *, rounded: bool = False) -> np.ndarray:
    """Crop ``size`` x ``size`` at left = int((w - size) / 2), top = int((h - size) / 2).

    With ``rounded``, as torchvision: left = int(round((w - size) / 2.0)), top likewise (halves to even).
    """
    height, width = image.shape[:2]
    if rounded:
        left, top = round((width - size) / 2.0), round((height - size) / 2.0)
    else:
        left, top = int((width - size) / 2), int((height - size) / 2)
    return image[top:top + size, left:left + size]


def _pillow_resize(image: np.ndarray, side: int, interpolation: str) -> np.ndarray:
    """torchvision's F.resize(img, side) on a PIL image of the RGB array, back as a uint8 array."""
    pil = _pillow("the pillow crop pipeline")
    new_h, new_w = resized_shape(*image.shape[:2], side)
    resample = getattr(pil.Resampling, interpolation.upper())
    return np.asarray(pil.fromarray(image).resize((new_w, new_h), resample))


def crop_image(path: str | os.PathLike, params: CropParams = CropParams()) -> np.ndarray:
    """The pipeline up to the uint8 crop: read, RGB, resize the shorter side, centre crop."""
    image = read_rgb(path)
    if params.library == "pillow":
        resized = _pillow_resize(image, params.resize_side, params.interpolation)
        return np.ascontiguousarray(centre_crop(resized, params.size, rounded=True))
    resized = resize_shorter_side(image, params.resize_side, INTERPOLATIONS[params.interpolation])
    return np.ascontiguousarray(centre_crop(resized, params.size))


def normalise(
    crops: np.ndarray, profile: str | Profile = "mlperf-resnet50", layout: str = "NCHW",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Turn uint8 crops (N, H, W, 3) into float32 model input in ``layout``, writing into ``out`` if given.

    Results are bit-identical to converting to float32 first and then applying the profile's float32
    steps one by one. Raises UsageError for an unknown profile or layout.
    """
    prof = get_profile(profile)
    if layout not in LAYOUTS:
        raise UsageError(f"unknown data layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
        raise ValueError(f"expected uint8 crops of shape (N, H, W, 3), got {crops.dtype} {crops.shape}")
    channel_shape = (1, 3, 1, 1) if layout == "NCHW" else (3,)
    mean = np.asarray(prof.mean, dtype=np.float32).reshape(channel_shape)
    source = crops.transpose(0, 3, 1, 2) if layout == "NCHW" else crops
    if out is None:
        out = np.empty(source.shape, dtype=np.float32)
    if prof.divisor is not None:
        np.divide(source, np.float32(prof.divisor), out=out, dtype=np.float32)
        np.subtract(out, mean, out=out)
    else:
        np.subtract(source, mean, out=out, dtype=np.float32)
    if prof.scale is not None:
        np.multiply(out, np.float32(prof.scale), out=out)
    if prof.std is not None:
        np.divide(out, np.asarray(prof.std, dtype=np.float32).reshape(channel_shape), out=out)
    return out


@dataclass(frozen=True)
class CacheReport:
    """What :meth:`CropCache.ensure` did: crops computed now and crops found in the cache."""

    computed: int
    reused: int


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _save_atomic(array: np.ndarray, path: Path) -> None:
    write_atomic(path, lambda handle: np.save(handle, array, allow_pickle=False))


def _build_one(job: tuple[str, str, CropParams]) -> str | None:
    """Crop one image into the cache; the FormatError's message when the image cannot be used."""
    source, target, params = job
    try:
        crop = crop_image(source, params)
    except FormatError as exc:
        return exc.message
    _save_atomic(crop, Path(target))
    return None


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one image per process; OpenCV's own threads would oversubscribe


class CropCache:
    """uint8 crops on disk, one ``.npy`` per image, keyed by crop parameters and source file identity."""

    def __init__(self, cache_dir: str | os.PathLike, params: CropParams = CropParams()) -> None:
        self.params = params
        self.directory = Path(cache_dir) / f"crops-{params.key}"

    def path_for(self, sample: Sample) -> Path:
        """Where the crop of ``sample`` lives; changes when the image's path, size or mtime changes."""
        identity = f"{sample.path.absolute()}\0{sample.size}\0{sample.mtime_ns}"
        digest = hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()[:20]
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(sample.name).stem)[:64]
        return self.directory / f"{stem}-{digest}.npy"

    def ensure(
        self, samples: Sequence[Sample], *, workers: int | None = None, progress: bool | None = None,
    ) -> CacheReport:
        """Compute the missing crops of ``samples`` in parallel (processes sized to the cores).

        ``progress`` shows a tqdm bar on stderr (default: when stderr is a TTY).
        Raises FormatError naming an image OpenCV cannot decode.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        todo = [s for s in samples if not self.path_for(s).is_file()]
        if not todo:
            return CacheReport(0, len(samples))
        jobs = [(os.fspath(s.path), os.fspath(self.path_for(s)), self.params) for s in todo]
        nproc = max(1, min(workers or available_cores(), len(jobs)))
        if workers is None and len(jobs) < INLINE_BELOW:
            nproc = 1  # starting processes would cost more than it saves
        show = sys.stderr.isatty() if progress is None else progress
        log.info("preprocessing %d images into %s with %d processes", len(jobs), self.directory, nproc)
        bar = _progress_bar(len(jobs), show)
        failures: list[str] = []
        try:
            if nproc == 1:
                for job in jobs:
                    failures.append(_build_one(job))
                    bar(1)
            else:
                # never plain fork: OpenCV's thread pool, once used in this process, deadlocks in
                # a forked child; a fork server starts from a clean process
                context = multiprocessing.get_context("forkserver" if sys.platform.startswith("linux") else "spawn")
                with context.Pool(nproc, initializer=_init_worker) as pool:
                    chunk = max(1, min(32, len(jobs) // (nproc * 8)))
                    for failure in pool.imap(_build_one, jobs, chunksize=chunk):
                        failures.append(failure)
                        bar(1)
        finally:
            bar(None)
        bad = [(sample, message) for sample, message in zip(todo, failures) if message]
        if bad:
            sample, message = bad[0]
            more = f"; {len(bad) - 1} more image(s) failed too" if len(bad) > 1 else ""
            raise FormatError(f"{message} (val_map line {sample.line}: {sample.name}){more}",
                              hint="replace the damaged file or remove its line from the list")
        return CacheReport(len(todo), len(samples) - len(todo))

    def load(self, sample: Sample) -> np.ndarray:
        """The uint8 (size, size, 3) crop of ``sample``; a missing or damaged cache file is rebuilt."""
        path = self.path_for(sample)
        expected = (self.params.size, self.params.size, 3)
        try:
            crop = np.load(path, allow_pickle=False)
            if crop.shape == expected and crop.dtype == np.uint8:
                return crop
            log.warning("cache file %s has %s %s; rebuilding it", path, crop.dtype, crop.shape)
        except FileNotFoundError:
            pass
        except (ValueError, OSError, EOFError) as exc:
            log.warning("cache file %s is damaged (%s); rebuilding it", path, exc)
        path.parent.mkdir(parents=True, exist_ok=True)
        crop = crop_image(sample.path, self.params)
        _save_atomic(crop, path)
        return crop

    def load_many(self, samples: Iterable[Sample], out: np.ndarray | None = None) -> np.ndarray:
        """Stack the crops of ``samples`` into ``out`` (or a new (N, size, size, 3) uint8 array)."""
        items = list(samples)
        if out is None:
            out = np.empty((len(items), self.params.size, self.params.size, 3), dtype=np.uint8)
        for i, sample in enumerate(items):
            out[i] = self.load(sample)
        return out


def _progress_bar(total: int, show: bool) -> Callable[[int | None], None]:
    """A callable advancing a tqdm bar on stderr (closing it when given None); a no-op when hidden."""
    if not show:
        return lambda step: None
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a nicety; the work goes on without it
        return lambda step: None

    bar = tqdm(total=total, unit="img", desc="preprocess", file=sys.stderr, leave=False)

    def advance(step: int | None) -> None:
        if step is None:
            bar.close()
        else:
            bar.update(step)

    return advance
