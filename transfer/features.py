"""Pooled features of extracted sub-networks over a dataset, optionally cached on disk.

Several sub-networks are run on each batch so images are decoded once for all of them. Under
torchrun each process extracts its slice of the dataset (``DistributedSampler`` without shuffling)
and the slices are gathered on every process in dataset order. The cache is keyed by checkpoint
digest, dataset digest and split, so ``linear-fast`` and ``knn`` runs on the same checkpoint and
data share one extraction; rank 0 alone writes it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pretrain.checkpoints.format import atomic_torch_save, read_torch_file
from pretrain.models.plain_resnet import PlainResNet
from transfer.classify import distributed as dist

log = logging.getLogger(__name__)

CACHE_VERSION = 2   # 2: float32 unless large (version 1 stored every cache in float16)
# Above 1 GiB of float32 (an ImageNet-train split: 1.28M x 2048 = 10 GiB per sub-network) features
# are kept and stored in float16: half the disk and of the RAM every process holds, and a relative
# rounding of 2^-11, far below what moves a linear probe or a kNN vote. Smaller sets (Fashion-MNIST,
# ImageNet val: 0.4 GiB) stay float32, so a cached run gives exactly the numbers of a fresh one.
HALF_ABOVE_BYTES = 1 << 30


def pooled(net: PlainResNet, x: torch.Tensor) -> torch.Tensor:
    """Global-average-pooled last-stage features (ignoring any classifier the network carries)."""
    return torch.flatten(net.avgpool(net.forward_features(x)), 1)


def storage_dtype(rows: int, dim: int, half_above_bytes: int = HALF_ABOVE_BYTES) -> torch.dtype:
    """float16 for a feature matrix whose float32 form exceeds ``half_above_bytes``, else float32."""
    return torch.float16 if rows * dim * 4 > half_above_bytes else torch.float32


@torch.no_grad()
def extract_features(nets: Mapping[str, nn.Module], loader: DataLoader, device: torch.device,
                     desc: str = "features", dtypes: Optional[Mapping[str, torch.dtype]] = None,
                     ) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    """Features of every network in ``nets`` (eval mode) over ``loader``: ({name: N x C}, labels).

    Each network's rows are kept in ``dtypes[name]`` (default float32) batch by batch, so a large
    split never sits in memory in float32.
    """
    dtypes = dtypes or {}
    for net in nets.values():
        net.eval().to(device)
    feats: Dict[str, list] = {name: [] for name in nets}
    labels = []
    for images, targets in tqdm(loader, desc=desc, leave=False, mininterval=5, disable=not dist.is_main()):
        images = images.to(device, non_blocking=True)
        for name, net in nets.items():
            feats[name].append(pooled(net, images).to(dtypes.get(name, torch.float32)).cpu())
        labels.append(torch.as_tensor(targets))
    return {name: torch.cat(f) for name, f in feats.items()}, torch.cat(labels).long()


class FeatureCache:
    """Feature files ``<root>/v2-<checkpoint digest>-<data digest>/<subnet>-<split>.pt``, written atomically."""

    def __init__(self, root: Optional[Path], checkpoint_digest: str, data_digest: str,
                 half_above_bytes: int = HALF_ABOVE_BYTES):
        self.folder = (Path(root) / f"v{CACHE_VERSION}-{checkpoint_digest[:16]}-{data_digest[:16]}"
                       if root is not None and checkpoint_digest else None)
        self.half_above_bytes = half_above_bytes

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

    def dtype_for(self, rows: int, net: nn.Module) -> torch.dtype:
        """The dtype this cache keeps ``rows`` features of ``net`` in (see ``HALF_ABOVE_BYTES``)."""
        return storage_dtype(rows, net.num_features, self.half_above_bytes)


def sharded_loader(dataset: Dataset, batch_size: int, workers: int) -> DataLoader:
    """The items of ``dataset`` this process extracts, in order (all of them in one process)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=dist.shard_sampler(dataset), num_workers=workers)


def cached_features(nets: Mapping[str, nn.Module], dataset_fn: Callable[[], Dataset], split: str,
                    cache: FeatureCache, device: torch.device, batch_size: int = 256,
                    workers: int = 0) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    """Features of every network for ``split``, computing (in one sharded pass) only those not cached yet.

    ``nets`` is indexed only for the names not cached, so a lazy mapping builds no other network.
    Every process returns all rows in dataset order. A file counts as cached only when every process
    can read it (say, folders not shared across machines), so all of them take part in one extraction.
    """
    out: Dict[str, torch.Tensor] = {}
    labels = None
    missing = []
    for name in nets:
        hit = cache.load(name, split)
        if dist.all_agree(hit is not None, device):
            out[name], labels = hit
            log.info("features of %s (%s) from cache %s", name, split, cache.path(name, split))
        else:
            missing.append(name)
    if missing:
        dataset = dataset_fn()
        dtypes = {name: cache.dtype_for(len(dataset), nets[name]) for name in missing}
        local, local_labels = extract_features({n: nets[n] for n in missing},
                                               sharded_loader(dataset, batch_size, workers), device,
                                               desc=f"{split} features", dtypes=dtypes)
        labels = dist.gather_shards(local_labels, len(dataset), device)
        for name in missing:
            out[name] = dist.gather_shards(local.pop(name), len(dataset), device)
            if dist.is_main():
                cache.save(name, split, out[name], labels)
        dist.barrier()   # the files are complete on return, for whichever process looks next
    return {name: out[name] for name in nets}, labels
