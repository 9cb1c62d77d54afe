"""Evaluation transforms and loaders shared by the downstream protocols."""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import DataLoader
from torchvision import transforms as T

from pretrain.data.datasets import image_folder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_transform(resolution: int = 224) -> T.Compose:
    """The standard evaluation transform: resize to 256/224 of the crop, center crop, normalize."""
    return T.Compose([T.Resize(int(round(resolution * 256 / 224))), T.CenterCrop(resolution), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def calibration_loader(root: Path, resolution: int = 224, batch_size: int = 32) -> DataLoader:
    """A shuffled ImageFolder loader for BN calibration of widths not in the stored list."""
    return DataLoader(image_folder(root, eval_transform(resolution)), batch_size=batch_size, shuffle=True)
