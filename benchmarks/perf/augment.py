"""Two-view augmentation per CPU core: SlimBench's pipelines against upstream SlimCLR's, one run.

Each side reads real JPEGs through torchvision's ``ImageFolder`` (decoded from the file every time,
as in training) and makes one pair of 224 px views per image:

- SlimBench: ``pretrain.data.loader.TwoViewDataset`` over ``pretrain.data.augment.two_view_transforms``, as
  the trainer's loader builds it (per-sample seeds, uint8 views normalised later on the device);
- upstream: SlimCLR's ``dataset/dataloader.py`` transform lists for ``ssl_aug`` ``mocov2`` and
  ``mocov3`` (BYOL's recipe), rebuilt here from their values, with the ``GaussianBlur`` and
  ``Solarize`` of its ``dataset/transforms.py`` (PIL blur of radius sigma ~ U(0.1, 2.0) drawn with
  Python's ``random``; ``ImageOps.solarize``), ending in ``ToTensor`` + ``Normalize``.

The images are made from the photo matplotlib ships (``sample_data/grace_hopper.jpg``), resized to
ImageNet's typical sizes. Rates are pairs per CPU-second of this process with one torch thread
(PIL works on one core), alternating the two sides in rounds so load elsewhere affects both alike.
"""
from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict

import torch
from PIL import Image, ImageFilter, ImageOps
from torchvision import datasets
from torchvision import transforms as T

from pretrain.data.augment import two_view_transforms
from pretrain.data.loader import TwoViewDataset

# ImageNet's median image is about 500 x 375; these span its common shapes
SIZES = ((500, 375), (375, 500), (500, 333), (640, 480), (500, 500), (800, 600))
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def sample_photo() -> Path:
    """matplotlib's sample photo (a real JPEG shipped in the venv)."""
    import matplotlib
    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def make_image_folder(root: Path, copies: int = 4) -> Path:
    """An ImageFolder of real JPEGs (quality 90) at ImageNet-like sizes, made from the sample photo."""
    photo = Image.open(sample_photo()).convert("RGB")
    folder = root / "train" / "n00000000"
    folder.mkdir(parents=True)
    for i, (w, h) in enumerate(SIZES * copies):
        img = photo.resize((w, h), Image.BICUBIC)
        if i % 2:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        img.save(folder / f"img_{i:03d}.JPEG", quality=90)
    return root / "train"


# ---- upstream SlimCLR, rebuilt from dataset/dataloader.py and dataset/transforms.py ------------
class _UpstreamBlur:
    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, x):
        return x.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.sigma[0], self.sigma[1])))


class _UpstreamSolarize:
    def __call__(self, x):
        return ImageOps.solarize(x)


def upstream_views(kind: str):
    """Upstream's (query, key) transforms: ``mocov2`` or ``byol`` (upstream's ``ssl_aug='mocov3'``)."""
    normalize = T.Normalize(mean=MEAN, std=STD)
    if kind == "mocov2":
        aug = T.Compose([T.RandomResizedCrop(224, scale=(0.2, 1.)),
                         T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                         T.RandomGrayscale(p=0.2), T.RandomApply([_UpstreamBlur([.1, 2.])], p=0.5),
                         T.RandomHorizontalFlip(), T.ToTensor(), normalize])
        return aug, aug
    crop_min = 0.2   # params.py --crop-min default
    a1 = T.Compose([T.RandomResizedCrop(224, scale=(crop_min, 1.)),
                    T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
                    T.RandomGrayscale(p=0.2), T.RandomApply([_UpstreamBlur([.1, 2.])], p=1.0),
                    T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    a2 = T.Compose([T.RandomResizedCrop(224, scale=(crop_min, 1.)),
                    T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
                    T.RandomGrayscale(p=0.2), T.RandomApply([_UpstreamBlur([.1, 2.])], p=0.1),
                    T.RandomApply([_UpstreamSolarize()], p=0.2),
                    T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    return a1, a2


class _UpstreamPairs(torch.utils.data.Dataset):
    def __init__(self, folder: Path, views):
        self.base, (self.v1, self.v2) = datasets.ImageFolder(folder), views

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x = self.base[i][0]
        return self.v1(x), self.v2(x)


# ---- measurement -----------------------------------------------------------------------------
def pairs_per_cpu_second(make_pair: Callable[[int], object], n: int, start: int) -> float:
    """Pairs per CPU-second of ``make_pair(i)`` over ``n`` images (process CPU time, one thread)."""
    t0 = time.process_time()
    for i in range(start, start + n):
        make_pair(i)
    return n / (time.process_time() - t0)


def compare(folder: Path, kind: str, rounds: int = 5, per_round: int = 24) -> Dict[str, float]:
    """Median pairs/s per core of SlimBench's and upstream's ``kind`` pipelines, alternated in rounds."""
    base = datasets.ImageFolder(folder)
    v1, v2 = two_view_transforms(kind, 224, (0.2, 1.0), blur=True, as_uint8=True)
    ours = TwoViewDataset(base, v1, v2)
    theirs = _UpstreamPairs(folder, upstream_views(kind))
    n = len(base)
    sides = {"slimbench": lambda i: ours[(i % n, 1000 + i)], "upstream": lambda i: theirs[i % n]}
    rates = {name: [] for name in sides}
    for fn in sides.values():   # warm-up: imports, PIL's first decode
        pairs_per_cpu_second(fn, 4, 0)
    for r in range(rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in order:
            rates[name].append(pairs_per_cpu_second(sides[name], per_round, r * per_round))
    return {name: statistics.median(v) for name, v in rates.items()}


def run(rounds: int = 5, per_round: int = 24) -> Dict[str, Dict[str, float]]:
    """Print pairs/s per core of both pipelines for ``mocov2`` and ``byol`` and their ratios."""
    torch.set_num_threads(1)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_image_folder(Path(tmp))
        for kind in ("mocov2", "byol"):
            out[kind] = compare(folder, kind, rounds, per_round)
    print("two-view pipelines, 224 px views of real JPEGs decoded each time, pairs per CPU-second (one core):")
    for kind, r in out.items():
        print(f"  {kind:<7} slimbench {r['slimbench']:7.1f}   upstream {r['upstream']:7.1f}")
    for kind, r in out.items():
        print(f"{kind} slimbench/upstream pairs per second: {r['slimbench'] / r['upstream']:.2f}")
    return out
