"""``semi``: fine-tune each whole extracted sub-network on 1% or 10% of the training labels.

``params.subset`` names the labelled images: ``simclr-1pct`` / ``simclr-10pct`` are SimCLR's ImageNet
file lists, shipped in ``imagenet_subsets/`` beside this module; ``file`` reads the user's own list
(``subset_file``, one image file name per line, e.g. ``n01440764_10026.JPEG``); ``balanced`` draws
``label_fraction`` of every class, deterministically from ``seed``. A list naming images the training
folder lacks fails before any training. The subset's digest is stored with the run, so results on
different subsets are never confused.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Literal, Optional, Tuple

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

# SimCLR's lists (google-research/simclr, imagenet_subsets/, Apache-2.0), found beside this module
SUBSETS_DIR = Path(__file__).resolve().parent / "imagenet_subsets"
SIMCLR_SUBSETS = {"simclr-1pct": SUBSETS_DIR / "1percent.txt", "simclr-10pct": SUBSETS_DIR / "10percent.txt"}
MISSING_SHOWN = 5                    # missing image names quoted in the error


@dataclass
class SemiParams:
    """Which images keep their labels, and the fine-tuning recipe (SGD, Nesterov momentum, cosine)."""

    subset: Literal["simclr-1pct", "simclr-10pct", "balanced", "file"] = "simclr-1pct"
    subset_file: Optional[str] = None  # subset: file; a relative path is read from --data-root
    label_fraction: Optional[float] = None  # subset: balanced; fraction of every class that keeps its label
    seed: int = 0                    # subset: balanced; seed of the draw
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
        if self.label_fraction is not None and not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction must be in (0, 1], got {self.label_fraction}")
        if self.subset == "balanced" and self.label_fraction is None:
            raise ValueError("subset: balanced needs label_fraction (the fraction of every class that keeps its label)")
        if self.subset != "balanced" and self.label_fraction is not None:
            raise ValueError(f"label_fraction is used only with subset: balanced; subset: {self.subset} names its "
                             f"own images")
        if self.subset == "file" and not self.subset_file:
            raise ValueError("subset: file needs subset_file (a list of image file names, one per line)")
        if self.subset != "file" and self.subset_file:
            raise ValueError(f"subset_file is read only with subset: file (got subset: {self.subset})")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.head_lr <= 0:
            raise ValueError("epochs, batch_size, lr and head_lr must be positive")

    def subset_path(self, data_root: Optional[Path]) -> Optional[Path]:
        """The file list this subset reads (None for ``balanced``)."""
        if self.subset in SIMCLR_SUBSETS:
            return SIMCLR_SUBSETS[self.subset]
        if self.subset == "file":
            path = Path(self.subset_file).expanduser()
            return path if path.is_absolute() or data_root is None else Path(data_root) / path
        return None


def _file_names(ds) -> Optional[List[str]]:
    """Image file names of an ImageFolder (or a subset of one), else None."""
    base, idx = (ds.dataset, ds.indices) if isinstance(ds, Subset) else (ds, range(len(ds)))
    samples = getattr(base, "samples", None)
    return None if samples is None else [Path(samples[j][0]).name for j in idx]


def label_subset(ds, fraction: Optional[float], seed: int,
                 subset_file: Optional[Path] = None) -> Tuple[List[int], str]:
    """Indices of the labelled images and the digest of that subset (sha256 of its sorted names or indices).

    With ``subset_file`` the images it lists (all of them must be in ``ds``), else ``fraction`` of every
    class drawn with ``seed``."""
    names = _file_names(ds)
    if subset_file is not None:
        if names is None:
            raise DataError(f"subset file {subset_file}: a file list needs an ImageFolder dataset (kind: imagefolder)")
        if not subset_file.is_file():
            raise DataError(f"subset file {subset_file}: no such file; expected one image file name per line "
                            f"(the SimCLR format, e.g. n01440764_10026.JPEG)")
        wanted = {line.strip().split("/")[-1] for line in subset_file.read_text().splitlines() if line.strip()}
        indices = [i for i, n in enumerate(names) if n in wanted]
        missing = sorted(wanted - {names[i] for i in indices})
        if missing:
            base = ds.dataset if isinstance(ds, Subset) else ds
            where = getattr(base, "root", "the training set")
            raise DataError(f"subset file {subset_file}: {len(missing)} of {len(wanted)} listed images are not in "
                            f"{where} ({len(names)} images); first missing: {', '.join(missing[:MISSING_SHOWN])}")
    else:
        if fraction is None:
            raise ValueError("a class-balanced subset needs a label fraction")
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
    description = "fine-tune each sub-network on a labelled subset (SimCLR 1%/10% list, a file, balanced); top-1/top-5"

    def run(self, ctx: RunContext) -> Iterator[Result]:
        p, d, device = ctx.params, ctx.dataset, ctx.device
        train_full = d.split(ctx.data_root, "train", d.train_transform(p.rrc_scale))
        subset_file = p.subset_path(ctx.data_root)
        indices, digest = label_subset(train_full, p.label_fraction, p.seed, subset_file)  # before any training
        source = (f"class-balanced {p.label_fraction} seed {p.seed}" if subset_file is None
                  else f"{p.subset} ({subset_file})")
        ctx.info.update(subset_digest=digest, subset_size=len(indices), subset_source=source)
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
