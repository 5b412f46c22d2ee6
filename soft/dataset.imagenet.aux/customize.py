"""The optional caffe ImageNet files that sit beside val.txt and synset_words.txt."""
from __future__ import annotations

from pathlib import Path

_OPTIONAL = {
    "synsets.txt": "CK_CAFFE_IMAGENET_SYNSETS_TXT",
    "train.txt": "CK_CAFFE_IMAGENET_TRAIN_TXT",
    "det_synset_words.txt": "CK_CAFFE_IMAGENET_DET_SYNSET_WORDS_TXT",
    "imagenet_mean.binaryproto": "CK_CAFFE_IMAGENET_MEAN_BIN",
}


def setup_env(*, dir: Path) -> dict:
    """One variable per optional file present."""
    return {variable: str(dir / name) for name, variable in _OPTIONAL.items() if (dir / name).is_file()}
