"""The ``dataset:`` block of classification suites: an ImageFolder tree or Fashion-MNIST.

``kind: imagefolder`` reads ``<data-root>/<train>/CLASS/IMAGE`` and ``<data-root>/<val>/CLASS/IMAGE``
(the ImageNet layout), so any ImageFolder dataset runs by copying a suite and changing this block.
``kind: fmnist`` reads Fashion-MNIST's IDX files through ``pretrain.data.datasets.FashionMNIST``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Literal, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset, Subset
from torchvision import transforms as T
from torchvision.transforms import functional as F

from pretrain.data.datasets import FMNIST_CLASSES, FashionMNIST, find_fmnist, image_folder
from pretrain.errors import DataError
from transfer.data import IMAGENET_MEAN, IMAGENET_STD


def evenly_spaced(n: int, limit: Optional[int]) -> List[int]:
    """``limit`` indices spread evenly over ``range(n)`` (all of them when ``limit`` is None or >= n)."""
    if limit is None or limit >= n:
        return list(range(n))
    return [i * n // limit for i in range(limit)]


@dataclass
class ClassificationData:
    """Where the images are and how they are cropped; ``check`` runs before any work starts."""

    kind: Literal["imagefolder", "fmnist"] = "imagefolder"
    train: str = "train"             # sub-folder of --data-root (imagefolder)
    val: str = "val"
    train_limit: Optional[int] = None  # use this many training images, evenly spaced over the set
    val_limit: Optional[int] = None
    resolution: int = 224            # crop size seen by the network
    resize: Optional[int] = None     # evaluation resize before the center crop; default resolution*256/224
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"   # of every resize (torchvision's default)

    def validate(self) -> None:
        for key in ("train_limit", "val_limit", "resize"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value}")
        if self.resolution < 8:
            raise ValueError(f"resolution must be at least 8, got {self.resolution}")

    # -- checks ---------------------------------------------------------------------------------
    def check(self, data_root: Path) -> None:
        """Raise DataError naming the expected layout when the data is not where the block says."""
        if self.kind == "fmnist":
            find_fmnist(data_root if data_root and Path(data_root).exists() else None)
            return
        root = Path(data_root)
        for split in (self.train, self.val):
            folder = root / split
            if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
                raise DataError(
                    f"dataset folder {folder} not found or has no class folders; expected the ImageNet layout "
                    f"{root}/{self.train}/CLASS/IMAGE and {root}/{self.val}/CLASS/IMAGE (set --data-root)"
                )

    # -- transforms -----------------------------------------------------------------------------
    @property
    def _mode(self) -> T.InterpolationMode:
        return T.InterpolationMode.BICUBIC if self.interpolation == "bicubic" else T.InterpolationMode.BILINEAR

    def eval_view(self) -> list:
        """The geometric ops of the evaluation view: resize the shorter side, then center crop."""
        resize = self.resize or int(round(self.resolution * 256 / 224))
        return [T.Resize(resize, interpolation=self._mode), T.CenterCrop(self.resolution)]

    def eval_transform(self) -> T.Compose:
        """The evaluation view, normalized: what every evaluation and feature cache uses."""
        return T.Compose([*self.eval_view(), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def train_transform(self, scale: Sequence[float] = (0.08, 1.0)) -> T.Compose:
        """RandomResizedCrop + horizontal flip, the MoCo/SimCLR training augmentation of probes and fine-tuning."""
        return T.Compose([T.RandomResizedCrop(self.resolution, scale=tuple(scale), interpolation=self._mode),
                          T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    # -- datasets -------------------------------------------------------------------------------
    def split(self, data_root: Path, which: Literal["train", "val"], transform) -> Dataset:
        """The train or val split (limited as the block says) with ``transform``."""
        if which not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {which!r}")
        limit = self.train_limit if which == "train" else self.val_limit
        if self.kind == "fmnist":
            root = data_root if data_root and Path(data_root).exists() else None
            full = FashionMNIST(root, "train" if which == "train" else "test", transform)
        else:
            full = image_folder(Path(data_root) / (self.train if which == "train" else self.val), transform)
        indices = evenly_spaced(len(full), limit)
        return full if len(indices) == len(full) else Subset(full, indices)

    def num_classes(self, data_root: Path) -> int:
        """Number of classes, without scanning the images."""
        if self.kind == "fmnist":
            return len(FMNIST_CLASSES)
        from torchvision.datasets.folder import find_classes

        return len(find_classes(str(Path(data_root) / self.train))[0])

    def digest(self) -> str:
        """sha256 of this block: the key of feature caches built from it."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


def targets_of(ds: Dataset) -> torch.Tensor:
    """Integer labels of a (possibly subset) ImageFolder or Fashion-MNIST dataset, without loading images."""
    if isinstance(ds, Subset):
        return targets_of(ds.dataset)[torch.as_tensor(ds.indices, dtype=torch.long)]
    return torch.as_tensor(ds.targets, dtype=torch.long)


def classes_of(ds: Dataset) -> Tuple[str, ...]:
    """Class names of a (possibly subset) dataset."""
    return tuple(classes_of(ds.dataset) if isinstance(ds, Subset) else ds.classes)


class CenterCropFraction(torch.nn.Module):
    """SimCLR's evaluation crop (``data_util.py`` ``center_crop``): the central square whose side is
    ``fraction`` of the image's shorter side, ``rint``-rounded, offset ``(size - side + 1) // 2``."""

    def __init__(self, fraction: float):
        super().__init__()
        self.fraction = float(fraction)

    def forward(self, image):
        _, height, width = F.get_dimensions(image)
        side = int(round(self.fraction * min(height, width)))   # Python's round halves to even, as tf.math.rint
        return F.crop(image, (height - side + 1) // 2, (width - side + 1) // 2, side, side)

    def extra_repr(self) -> str:
        return f"fraction={self.fraction}"


def transform_names(transform: T.Compose) -> List[str]:
    """The ops of a transform as short strings (``Resize(256, bicubic)``), for ``describe``."""
    names = []
    for t in transform.transforms:
        if isinstance(t, T.RandomResizedCrop):
            mode = "" if t.interpolation == T.InterpolationMode.BILINEAR else f", {t.interpolation.value}"
            names.append(f"RandomResizedCrop({t.size[0]}, scale=({float(t.scale[0])}, {float(t.scale[1])}){mode})")
        elif isinstance(t, T.Resize):
            names.append(f"Resize({t.size}, {t.interpolation.value})")
        elif isinstance(t, T.CenterCrop):
            names.append(f"CenterCrop({t.size[0]})")
        elif isinstance(t, CenterCropFraction):
            names.append(f"CenterCropFraction({t.fraction})")
        elif isinstance(t, T.Normalize):
            names.append(f"Normalize(mean={list(t.mean)}, std={list(t.std)})")
        else:
            names.append(f"{type(t).__name__}()")
    return names
