"""``semi``: fine-tune each whole extracted sub-network on 1% or 10% of the training labels.

The labelled subset is read from a file list in the SimCLR format (one image file name per line,
e.g. ``n01440764_10026.JPEG``) when ``subset_file`` is given, else drawn class-balanced and
deterministically from ``seed``. Its digest is stored with the run, so results on different
subsets are never confused.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from pretrain.errors import DataError
from transfer.classify import distributed as dist
from transfer.classify.data import ClassificationData, classes_of, targets_of
from transfer.classify.metrics import topk_correct
from transfer.classify.probe import accuracy_rows
from transfer.classify.subnets import extract_subnet

from .base import Protocol, Result, RunContext, register_protocol

log = logging.getLogger(__name__)


@dataclass
class SemiParams:
    """Fine-tuning recipe: SGD with Nesterov momentum and a cosine schedule."""

    label_fraction: float = 0.01
    subset_file: Optional[str] = None  # SimCLR file list; a relative path is read from --data-root
    seed: int = 0                    # seed of the class-balanced subset when there is no file list
    epochs: int = 60
    batch_size: int = 256            # global batch, split across DDP processes
    lr: float = 0.01                 # backbone learning rate
    head_lr: float = 0.1             # learning rate of the new classifier
    momentum: float = 0.9
    weight_decay: float = 0.0
    rrc_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])
    eval_batch_size: int = 256
    workers: int = 8

    def validate(self) -> None:
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction must be in (0, 1], got {self.label_fraction}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.head_lr <= 0:
            raise ValueError("epochs, batch_size, lr and head_lr must be positive")


def _file_names(ds) -> Optional[List[str]]:
    """Image file names of an ImageFolder (or a subset of one), else None."""
    base, idx = (ds.dataset, ds.indices) if isinstance(ds, Subset) else (ds, range(len(ds)))
    samples = getattr(base, "samples", None)
    return None if samples is None else [Path(samples[j][0]).name for j in idx]


def label_subset(ds, fraction: float, seed: int, subset_file: Optional[Path] = None) -> Tuple[List[int], str]:
    """Indices of the labelled images and the digest of that subset (sha256 of its sorted names or indices)."""
    names = _file_names(ds)
    if subset_file is not None:
        if names is None:
            raise DataError(f"subset file {subset_file}: a file list needs an ImageFolder dataset (kind: imagefolder)")
        if not subset_file.is_file():
            raise DataError(f"subset file {subset_file}: no such file; expected one image file name per line "
                            f"(the SimCLR format, e.g. n01440764_10026.JPEG)")
        wanted = {line.strip().split("/")[-1] for line in subset_file.read_text().splitlines() if line.strip()}
        indices = [i for i, n in enumerate(names) if n in wanted]
        if len(indices) < len(wanted):
            missing = sorted(wanted - {names[i] for i in indices})
            raise DataError(f"subset file {subset_file}: {len(missing)} of {len(wanted)} listed images are not in "
                            f"the training set (e.g. {missing[:3]})")
    else:
        targets = targets_of(ds)
        g = torch.Generator().manual_seed(seed)
        indices = []
        for c in torch.unique(targets).tolist():
            members = torch.nonzero(targets == c).flatten()
            take = max(1, int(round(fraction * len(members))))
            indices += members[torch.randperm(len(members), generator=g)[:take]].tolist()
        indices.sort()
    keys = sorted(names[i] for i in indices) if names is not None else [str(i) for i in indices]
    return indices, hashlib.sha256("\n".join(keys).encode()).hexdigest()


def fine_tune(net: nn.Module, train, p: SemiParams, device: torch.device, seed: int, desc: str) -> nn.Module:
    """Train every parameter of ``net`` (BN in train mode) with cross-entropy."""
    net.to(device).train()
    net.requires_grad_(True)
    model = dist.wrap_ddp(net, device)
    head = list(net.fc.parameters())
    head_ids = {id(q) for q in head}
    body = [q for q in net.parameters() if id(q) not in head_ids]
    opt = torch.optim.SGD([{"params": body, "lr": p.lr}, {"params": head, "lr": p.head_lr}],
                          momentum=p.momentum, weight_decay=p.weight_decay, nesterov=p.momentum > 0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p.epochs)
    sampler = DistributedSampler(train, seed=seed) if dist.world_size() > 1 else None
    # at least two images per batch: BatchNorm cannot train on one
    loader = DataLoader(train, batch_size=max(2, p.batch_size // dist.world_size()), shuffle=sampler is None,
                        sampler=sampler, num_workers=p.workers, drop_last=len(train) > p.batch_size,
                        pin_memory=device.type == "cuda")
    for epoch in range(p.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        total, batches = 0.0, 0
        for images, targets in tqdm(loader, desc=f"{desc} epoch {epoch + 1}/{p.epochs}", leave=False,
                                    mininterval=5, disable=not dist.is_main()):
            loss = F.cross_entropy(model(images.to(device)), targets.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, batches = total + loss.item(), batches + 1
        sched.step()
        log.info("%s epoch %d/%d: loss %.4f", desc, epoch + 1, p.epochs, total / max(batches, 1))
    return net.eval()


@torch.no_grad()
def evaluate(net: nn.Module, val, batch_size: int, workers: int, device: torch.device) -> dict:
    """Top-1/top-5 (%) of a classifier on ``val`` (sharded over DDP processes)."""
    loader = DataLoader(Subset(val, dist.shard(len(val))), batch_size=batch_size, num_workers=workers)
    counts = [0.0, 0.0, 0.0]
    for images, targets in tqdm(loader, desc="eval", leave=False, mininterval=5):
        c = topk_correct(net(images.to(device)), targets.to(device))
        counts = [counts[0] + c[1], counts[1] + c[5], counts[2] + len(targets)]
    top1, top5, n = dist.sum_across(counts, device)
    return accuracy_rows({1: top1, 5: top5}, n)


@register_protocol
class SemiProtocol(Protocol):
    name = "semi"
    Params = SemiParams
    Dataset = ClassificationData
    description = "fine-tune each sub-network on a labelled subset (1% / 10%); top-1/top-5"

    def run(self, ctx: RunContext) -> Iterator[Result]:
        p, d, device = ctx.params, ctx.dataset, ctx.device
        train_full = d.split(ctx.data_root, "train", d.train_transform(p.rrc_scale))
        subset_file = None
        if p.subset_file:
            subset_file = Path(p.subset_file)
            subset_file = subset_file if subset_file.is_absolute() else Path(ctx.data_root) / subset_file
        indices, digest = label_subset(train_full, p.label_fraction, p.seed, subset_file)
        ctx.info.update(subset_digest=digest, subset_size=len(indices),
                        subset_source=str(subset_file) if subset_file else f"class-balanced seed {p.seed}")
        log.info("semi: %d labelled images (subset digest %s)", len(indices), digest[:12])
        train = Subset(train_full, indices)
        val = d.split(ctx.data_root, "val", d.eval_transform())
        num_classes = len(classes_of(train_full))
        for spec in ctx.subnets:
            start = time.perf_counter()
            torch.manual_seed(ctx.seed)
            net = extract_subnet(ctx, spec).cpu()
            net.fc = nn.Linear(net.num_features, num_classes)
            nn.init.normal_(net.fc.weight, std=0.01)
            nn.init.zeros_(net.fc.bias)
            fine_tune(net, train, p, device, ctx.seed, f"semi {spec}")
            for metric, value in evaluate(net, val, p.eval_batch_size, p.workers, device).items():
                yield Result(str(spec), metric, value)
            yield Result(str(spec), "wall_time_s", time.perf_counter() - start)
