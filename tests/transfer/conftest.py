"""Tiny real inputs for protocol and driver tests: an ImageFolder of separable images and a slim checkpoint."""
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pretrain.checkpoints.format import Checkpoint, save_checkpoint
from pretrain.models.resnet import SlimResNet

# one colour per class: separable even for a random-init network's pooled features
COLOURS = ((220, 40, 40), (40, 60, 220), (40, 200, 60))


def make_image_folder(root: Path, per_class: int = 6, size: int = 16, classes: int = 2,
                      splits=("train", "val")) -> Path:
    """``root/<split>/class<i>/img<j>.png``: noisy images of a class colour."""
    rng = np.random.default_rng(0)
    for split in splits:
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(per_class):
                img = np.clip(np.array(COLOURS[c])[None, None] + rng.normal(0, 25, (size, size, 3)), 0, 255)
                Image.fromarray(img.astype(np.uint8)).save(folder / f"{split}_{c}_{j}.png")
    return root


def make_checkpoint(path: Path, widths=(1.0, 0.5), desired=()) -> Path:
    """A random-init slim_resnet18 (small stem) checkpoint file."""
    torch.manual_seed(0)
    model = SlimResNet(18, widths=list(widths), stem="small")
    save_checkpoint(Checkpoint.from_model(model, method="random", config={"seed": 0}, desired=list(desired)), path)
    return path
