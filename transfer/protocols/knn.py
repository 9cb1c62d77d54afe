"""``knn``: weighted cosine kNN on pooled center-crop features of every sub-network; top-1 per sub-network.

Features come from the same cache as ``linear-fast``, so running both on one checkpoint extracts once.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterator

from transfer.classify.data import ClassificationData
from transfer.classify.knn import knn_predict
from transfer.classify.metrics import topk_correct
from transfer.protocols.linear import subnet_features

from .base import Protocol, Result, RunContext, register_protocol

log = logging.getLogger(__name__)


@dataclass
class KnnParams:
    """k=20, T=0.07 (InstDisc/MoCo); k=200, T=0.1 is the other setting in use."""

    k: int = 20
    temperature: float = 0.07
    batch_size: int = 256            # feature extraction batch
    workers: int = 8

    def validate(self) -> None:
        if self.k < 1 or self.temperature <= 0 or self.batch_size < 1 or self.workers < 0:
            raise ValueError("k and batch_size must be positive, temperature > 0, workers >= 0")


@register_protocol
class KnnProtocol(Protocol):
    name = "knn"
    Params = KnnParams
    Dataset = ClassificationData
    description = "weighted cosine kNN on pooled features; top-1/top-5 per sub-network"

    def run(self, ctx: RunContext) -> Iterator[Result]:
        start = time.perf_counter()
        p = ctx.params
        feats = subnet_features(ctx, p.batch_size, p.workers)
        (train_f, train_y), (val_f, val_y) = feats["train"], feats["val"]
        num_classes = ctx.dataset.num_classes(ctx.data_root)
        for spec in ctx.subnets:
            name = str(spec)
            scores = knn_predict(train_f[name].to(ctx.device), train_y, val_f[name], num_classes,
                                 p.k, p.temperature)
            correct = topk_correct(scores.cpu(), val_y)
            log.info("knn %s: top-1 %.2f%%", name, 100.0 * correct[1] / len(val_y))
            yield Result(name, "top1", 100.0 * correct[1] / len(val_y))
            yield Result(name, "top5", 100.0 * correct[5] / len(val_y))
            yield Result(name, "wall_time_s", time.perf_counter() - start)
