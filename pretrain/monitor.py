"""An online kNN monitor of a pretraining: every N epochs, each sub-network's kNN top-1 on a labelled pair.

solo-learn (``solo/utils/knn.py``, its ``WeightedKNNClassifier`` callback) and lightly (``lightly/utils/
benchmarking/knn_classifier.py``) watch self-supervised runs this way. SlimBench reuses its sanity probe's
classifier (``pretrain.probe.knn_accuracy``: cosine similarity, k=20, T=0.07, InstDisc's weighted vote) on
``run.monitor``'s train/val pair, one sub-network after the other, and the trainer logs the values beside
the losses (``<subnet>/knn_top1`` in log.jsonl and TensorBoard).

The monitor runs the encoder in eval mode under ``no_grad`` (no BatchNorm statistic moves) and never draws
from the global RNGs (its images are loaded once, by a loader with its own generator), so a run with a
monitor trains exactly as one without, and resumes as exactly. Depth variants are evaluated with their
width's stored (full-depth) statistics, uncalibrated: a trend, not the benchmark's number.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import transforms as T

from pretrain.data.augment import IMAGENET_MEAN, IMAGENET_STD
from pretrain.data.datasets import FashionMNIST, image_folder
from pretrain.probe import knn_accuracy
from pretrain.recipe import MonitorRecipe
from pretrain.models.resnet import SlimResNet
from pretrain.models.spec import SubnetSpec


def _evenly_spaced(dataset, limit: Optional[int]):
    if limit is None or limit >= len(dataset):
        return dataset
    return Subset(dataset, [int(i * len(dataset) / limit) for i in range(limit)])


def _load(dataset, batch_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    # its own generator: iterating a DataLoader otherwise draws a seed from the global torch RNG
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0,
                        generator=torch.Generator().manual_seed(0))
    images, labels = zip(*loader)
    return torch.cat(images), torch.cat(labels)


class KnnMonitor:
    """kNN top-1 (percent) of each sub-network on ``run.monitor``'s pair; the images are read once."""

    def __init__(self, cfg: MonitorRecipe, image_size: int, device: torch.device):
        self.cfg, self.device = cfg, device
        size = cfg.image_size or image_size
        if cfg.dataset == "fashion-mnist":
            tf = T.Compose([T.Resize(size, antialias=True), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
            root = Path(cfg.root) if cfg.root else None
            train, val = FashionMNIST(root, "train", tf), FashionMNIST(root, "test", tf)
        else:
            tf = T.Compose([T.Resize(int(round(size * 256 / 224)), antialias=True), T.CenterCrop(size),
                            T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
            train, val = image_folder(Path(cfg.root) / "train", tf), image_folder(Path(cfg.root) / "val", tf)
        self.num_classes = len(getattr(train, "classes", None) or range(10))
        self.train = _load(_evenly_spaced(train, cfg.train_limit), cfg.batch_size)
        self.val = _load(_evenly_spaced(val, cfg.val_limit), cfg.batch_size)

    @torch.no_grad()
    def _features(self, encoder: SlimResNet, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.normalize(encoder(images[i:i + self.cfg.batch_size].to(self.device)).float(), dim=1)
                          for i in range(0, len(images), self.cfg.batch_size)]).cpu()

    def __call__(self, encoder: SlimResNet, subnets: Sequence[SubnetSpec]) -> Dict[str, float]:
        """``{"<subnet>/knn_top1": percent}`` for each sub-network; the encoder's mode and sub-network are restored."""
        was_training = encoder.training
        encoder.eval()
        out = {}
        try:
            for spec in subnets:
                with encoder.subnet(spec):
                    acc = knn_accuracy(self._features(encoder, self.train[0]), self.train[1],
                                       self._features(encoder, self.val[0]), self.val[1],
                                       k=min(self.cfg.k, len(self.train[1])), temperature=self.cfg.temperature,
                                       num_classes=self.num_classes)
                out[f"{spec}/knn_top1"] = round(100.0 * acc, 4)
        finally:
            encoder.train(was_training)
        return out


def monitored_subnets(encoder: SlimResNet, desired: Sequence[str]) -> List[SubnetSpec]:
    """Every stored width at full depth, then the method's desired networks."""
    specs = encoder.subnets() + [encoder.check_subnet(d) for d in desired]
    return list(dict.fromkeys(specs))
