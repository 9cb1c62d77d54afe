"""Pooled features of extracted sub-networks over a data loader, optionally cached on disk.

Several sub-networks are run on each batch so images are decoded once for all of them. The cache
is keyed by checkpoint digest, dataset block digest and split, so ``linear-fast`` and ``knn``
runs on the same checkpoint and data share one extraction.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pretrain.checkpoint import atomic_torch_save, read_torch_file
from pretrain.plain_resnet import PlainResNet

log = logging.getLogger(__name__)


def pooled(net: PlainResNet, x: torch.Tensor) -> torch.Tensor:
    """Global-average-pooled last-stage features (ignoring any classifier the network carries)."""
    return torch.flatten(net.avgpool(net.forward_features(x)), 1)


@torch.no_grad()
def extract_features(nets: Mapping[str, nn.Module], loader: DataLoader, device: torch.device,
                     desc: str = "features") -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    """Features of every network in ``nets`` (eval mode) over ``loader``: ({name: N x C float16}, labels)."""
    for net in nets.values():
        net.eval().to(device)
    feats: Dict[str, list] = {name: [] for name in nets}
    labels = []
    for images, targets in tqdm(loader, desc=desc, leave=False, mininterval=5):
        images = images.to(device, non_blocking=True)
        for name, net in nets.items():
            # float16 halves the cache (ImageNet-scale caches are tens of GB); probes train in float32
            feats[name].append(pooled(net, images).half().cpu())
        labels.append(torch.as_tensor(targets))
    return {name: torch.cat(f) for name, f in feats.items()}, torch.cat(labels).long()


class FeatureCache:
    """Feature files ``<root>/<checkpoint digest>-<data digest>/<subnet>-<split>.pt``, written atomically."""

    def __init__(self, root: Optional[Path], checkpoint_digest: str, data_digest: str):
        self.folder = (Path(root) / f"{checkpoint_digest[:16]}-{data_digest[:16]}"
                       if root is not None and checkpoint_digest else None)

    def path(self, subnet: str, split: str) -> Optional[Path]:
        return None if self.folder is None else self.folder / f"{subnet}-{split}.pt"

    def load(self, subnet: str, split: str) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """Cached (features, labels), or None."""
        path = self.path(subnet, split)
        if path is None or not path.is_file():
            return None
        obj = read_torch_file(path, what="feature cache")
        return obj["features"], obj["labels"]

    def save(self, subnet: str, split: str, features: torch.Tensor, labels: torch.Tensor) -> None:
        path = self.path(subnet, split)
        if path is not None:
            atomic_torch_save({"features": features, "labels": labels}, path)


def cached_features(nets: Mapping[str, nn.Module], loader_fn, split: str, cache: FeatureCache,
                    device: torch.device) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    """Features of every network for ``split``, computing (in one pass) only those not cached yet."""
    out: Dict[str, torch.Tensor] = {}
    labels = None
    missing = {}
    for name, net in nets.items():
        hit = cache.load(name, split)
        if hit is None:
            missing[name] = net
        else:
            out[name], labels = hit
            log.info("features of %s (%s) from cache %s", name, split, cache.path(name, split))
    if missing:
        feats, labels = extract_features(missing, loader_fn(), device, desc=f"{split} features")
        for name, f in feats.items():
            cache.save(name, split, f, labels)
            out[name] = f
    return {name: out[name] for name in nets}, labels
