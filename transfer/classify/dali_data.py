"""The augmented classification protocols' training images through DALI (``params.backend: dali``).

The linear probe's RandomResizedCrop + flip (``ClassificationData.train_transform``) run as DALI
operators with the parameters the torchvision transform would draw (``pretrain.data.dali``), on the GPU
when there is one; labels come with the images. Each rank takes its slice of every global batch of
an epoch-seeded order (``pretrain.data.loader.ResumableSampler``); incomplete last batches are dropped.
"""
from __future__ import annotations

from typing import Iterator, Tuple

import torch
from torchvision import transforms as T

from pretrain.data.dali import DaliLoader, image_files, import_dali
from pretrain.errors import ConfigError
from pretrain.data.loader import ResumableSampler


def pil_ops(transform: T.Compose) -> list:
    """The random PIL operations of a train transform (its tensor conversion and normalisation left to DALI)."""
    return [t for t in transform.transforms if not isinstance(t, (T.ToTensor, T.PILToTensor, T.Normalize))]


class DaliEpochs:
    """Per-epoch (images, labels) batches of a labelled ImageFolder split; ``set_epoch`` as a DistributedSampler."""

    def __init__(self, dataset, transform: T.Compose, batch_per_rank: int, seed: int, rank: int, world_size: int,
                 device: torch.device, workers: int = 0):
        import_dali()
        try:
            files, labels = image_files(dataset)
        except ConfigError:
            raise ConfigError("params.backend: dali reads the image files of an imagefolder dataset "
                              "(dataset.kind: imagefolder); use params.backend: pil") from None
        resolution = next(t.size for t in transform.transforms if isinstance(t, T.RandomResizedCrop))
        self.sampler = ResumableSampler(len(files), batch_per_rank, seed, rank, world_size)
        self.loader = DaliLoader(files, labels, self.sampler, [pil_ops(transform)], resolution[0], device,
                                 workers=workers)

    def set_epoch(self, epoch: int) -> None:
        """Iterate epoch ``epoch`` next."""
        self.sampler.set_position(epoch)

    def __len__(self) -> int:
        return self.sampler.batches_per_epoch

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader:
            yield images, labels
