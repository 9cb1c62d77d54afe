"""Two-view training data that can stop and resume at any step, on any number of ranks.

Exact resumption needs two things a plain ``DataLoader`` does not give:

- a sampler that can start in the middle of an epoch (``ResumableSampler.set_position``), and
- augmentations that do not depend on which worker or process drew them: every sample is
  augmented under a seed derived from (run seed, epoch, index), so a resumed run, a run with
  more workers and a run on more ranks all see the same views of the same image.

The sampler streams every remaining epoch of the run, so the trainer iterates one loader once:
workers start once (and stay, ``persistent_workers``, for any later pass), and their prefetching
runs across epoch boundaries instead of stalling at each.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pretrain.data.augment import two_view_transforms
from pretrain.data.datasets import FashionMNIST, image_folder
from pretrain.errors import ConfigError


class TwoViewDataset(Dataset):
    """Wraps an image dataset; item ``(index, seed)`` is the pair of augmented views of image ``index``."""

    def __init__(self, base: Dataset, view1: Callable, view2: Callable):
        self.base, self.view1, self.view2 = base, view1, view2

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        index, seed = key
        # torchvision draws augmentation parameters from torch's global generator; fork it so a
        # main-process loader (workers=0) leaves the training RNG untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            image = self.base[index][0]
            return self.view1(image), self.view2(image)


class LabelledDataset(Dataset):
    """Wraps an image dataset; item ``(index, seed)`` is one augmented view of image ``index`` and its label."""

    def __init__(self, base: Dataset, view: Callable):
        self.base, self.view = base, view

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: Tuple[int, int]) -> Tuple[torch.Tensor, int]:
        index, seed = key
        with torch.random.fork_rng(devices=[]):   # as TwoViewDataset: the training RNG stays untouched
            torch.manual_seed(seed)
            image, label = self.base[index]
            return self.view(image), int(label)


def augment_seed(run_seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of image ``index`` in ``epoch``: the same on every rank, worker and resume."""
    return ((run_seed * 1_000_003 + epoch) * 10_000_019 + index) % (2 ** 63)


class ResumableSampler(Sampler):
    """Epoch-seeded shuffling split into global batches, each rank taking its slice of every batch.

    Yields ``(index, augmentation seed)`` from the position set by ``set_position`` to the end of
    epoch ``end_epoch - 1`` (by default only the epoch it starts in). Incomplete last batches are
    dropped, so every rank runs the same number of steps.
    """

    def __init__(self, num_samples: int, batch_per_rank: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.num_samples, self.batch_per_rank = num_samples, batch_per_rank
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.global_batch = batch_per_rank * world_size
        if num_samples < self.global_batch:
            raise ConfigError(f"the dataset has {num_samples} images, fewer than one global batch "
                              f"of {self.global_batch}: lower data.batch_size or raise data.limit")
        self.epoch, self.start_batch, self.end_epoch = 0, 0, 1

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.global_batch

    def set_position(self, epoch: int, start_batch: int = 0, end_epoch: Optional[int] = None) -> None:
        """Make the next iteration start at ``epoch``'s batch ``start_batch`` and run to ``end_epoch``."""
        self.epoch, self.start_batch = int(epoch), int(start_batch)
        self.end_epoch = self.epoch + 1 if end_epoch is None else max(int(end_epoch), self.epoch + 1)

    def _augment_seed(self, index: int, epoch: Optional[int] = None) -> int:
        return augment_seed(self.seed, self.epoch if epoch is None else epoch, index)

    def epoch_order(self, epoch: int) -> list:
        """The shuffled image order of ``epoch`` (the same on every rank)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_samples, generator=g).tolist()

    def item(self, k: int) -> Tuple[int, int]:
        """The k-th ``(index, seed)`` this rank yields from the position set (what ``__iter__`` yields k-th)."""
        step, offset = divmod(k, self.batch_per_rank)
        epoch, batch = divmod(self.epoch * self.batches_per_epoch + self.start_batch + step, self.batches_per_epoch)
        cached = getattr(self, "_order", None)
        if cached is None or cached[0] != epoch:   # one shuffle per epoch, held as a tensor
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = cached = (epoch, torch.randperm(self.num_samples, generator=g))
        index = int(cached[1][batch * self.global_batch + self.rank * self.batch_per_rank + offset])
        return index, augment_seed(self.seed, epoch, index)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        for epoch in range(self.epoch, self.end_epoch):
            order = self.epoch_order(epoch)
            first = self.start_batch if epoch == self.epoch else 0
            for b in range(first, self.batches_per_epoch):
                start = b * self.global_batch + self.rank * self.batch_per_rank
                for index in order[start:start + self.batch_per_rank]:
                    yield index, augment_seed(self.seed, epoch, index)

    def __len__(self) -> int:
        batches = (self.end_epoch - self.epoch) * self.batches_per_epoch - self.start_batch
        return batches * self.batch_per_rank


def build_image_dataset(data) -> Dataset:
    """The recipe's image dataset (PIL images, labels unused by pretraining)."""
    if data.dataset == "fashion-mnist":
        return FashionMNIST(Path(data.root) if data.root else None, split="train", limit=data.limit)
    ds = image_folder(Path(data.root))
    if data.limit is not None:
        ds = torch.utils.data.Subset(ds, range(min(data.limit, len(ds))))
    return ds


def build_sampler(data, num_samples: int, seed: int, rank: int, world_size: int) -> ResumableSampler:
    """The resumable sampler of the recipe's ``data`` section over ``num_samples`` images."""
    if data.batch_size % world_size:
        raise ConfigError(f"data.batch_size {data.batch_size} is not divisible by the {world_size} ranks")
    return ResumableSampler(num_samples, data.batch_size // world_size, seed, rank, world_size)


def build_loader(data, seed: int, rank: int = 0, world_size: int = 1, pin_memory: bool = False,
                 labelled: bool = False) -> Tuple[DataLoader, ResumableSampler]:
    """Two-view loader of the recipe's ``data`` section (uint8 views) and its resumable sampler.

    The views are uint8; the trainer normalises them on its device (``augment.DeviceNormalize``).
    ``labelled`` yields (one view, labels) batches instead, for the supervised method.
    """
    view1, view2 = two_view_transforms(data.augment, data.image_size, data.crop_scale, data.blur, as_uint8=True)
    base = build_image_dataset(data)
    dataset = LabelledDataset(base, view1) if labelled else TwoViewDataset(base, view1, view2)
    sampler = build_sampler(data, len(dataset), seed, rank, world_size)
    workers = data.workers
    loader = DataLoader(dataset, batch_size=sampler.batch_per_rank, sampler=sampler, num_workers=workers,
                        drop_last=True, pin_memory=pin_memory, persistent_workers=workers > 0,
                        prefetch_factor=data.prefetch if workers > 0 else None)
    return loader, sampler
