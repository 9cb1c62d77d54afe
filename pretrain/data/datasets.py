"""Datasets read from local folders in their standard layouts (no downloads at run time).

- Fashion-MNIST from its IDX files: ``--data-root``, else the Debian package
  ``dataset-fashion-mnist``, else torchvision's download when there is a network.
- An ImageNet-style folder (``train/CLASS/*.JPEG``) through ``torchvision.datasets.ImageFolder``.
"""
from __future__ import annotations

import gzip
import logging
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from pretrain.errors import DataError

log = logging.getLogger(__name__)

FMNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FMNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _open_idx(folder: Path, name: str) -> Optional[Path]:
    for candidate in (folder / name, folder / f"{name}.gz", folder / "FashionMNIST" / "raw" / name,
                      folder / "FashionMNIST" / "raw" / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DataError(f"{path}: truncated IDX file ({arr.size} of {int(np.prod(shape))} values)")
    return arr.reshape(shape)


def find_fmnist(data_root: Optional[Path] = None) -> Path:
    """The folder holding Fashion-MNIST's IDX files, or one error naming every way to provide it."""
    tried = []
    for folder in ([Path(data_root), Path(data_root) / "fashion-mnist"] if data_root else []) + [FMNIST_DEBIAN_DIR]:
        tried.append(str(folder))
        if all(_open_idx(folder, n) for pair in _FMNIST_FILES.values() for n in pair):
            return folder
    cache = Path(data_root) if data_root else Path.home() / ".cache" / "slimbench"
    try:  # last resort: torchvision's downloader, which works only with a network
        import torchvision

        torchvision.datasets.FashionMNIST(str(cache), train=True, download=True)
        torchvision.datasets.FashionMNIST(str(cache), train=False, download=True)
        return cache
    except Exception as e:  # no network: fall through to the one clear error
        log.debug("Fashion-MNIST download failed: %s", e)
    raise DataError(
        "Fashion-MNIST not found. Provide it one of three ways: (1) --data-root DIR holding "
        "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
        f"t10k-labels-idx1-ubyte[.gz] (looked in {', '.join(tried)}); (2) the Debian package: "
        "`apt-get install dataset-fashion-mnist` (installs into /usr/share/datasets/fashion-mnist); "
        "(3) a machine with a network, where torchvision downloads it."
    )


class FashionMNIST(Dataset):
    """Fashion-MNIST as 3-channel PIL images (so models keep an RGB stem) and integer labels."""

    classes = FMNIST_CLASSES

    def __init__(self, root: Optional[Path] = None, split: str = "train",
                 transform: Optional[Callable] = None, limit: Optional[int] = None):
        if split not in _FMNIST_FILES:
            raise DataError(f"Fashion-MNIST split {split!r}: expected 'train' or 'test'")
        folder = find_fmnist(root)
        images, labels = (read_idx(_open_idx(folder, n)) for n in _FMNIST_FILES[split])
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        self.images, self.targets = images, torch.as_tensor(labels.astype(np.int64))
        self.transform = transform
        self.root = folder

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> Tuple[object, int]:
        img = Image.fromarray(self.images[i], mode="L").convert("RGB")
        return (self.transform(img) if self.transform else img), int(self.targets[i])


def image_folder(root: Path, transform: Optional[Callable] = None):
    """``torchvision.datasets.ImageFolder`` with a clear error when the layout is not there."""
    import torchvision

    root = Path(root)
    if not root.is_dir() or not any(p.is_dir() for p in root.iterdir()):
        raise DataError(f"image folder {root}: not found or empty; expected {root}/CLASS/IMAGE.JPEG "
                        f"(the ImageNet layout: one sub-folder per class)")
    return torchvision.datasets.ImageFolder(str(root), transform=transform)
