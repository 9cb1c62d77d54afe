"""``knn``: weighted cosine kNN on pooled center-crop features of every sub-network; top-1 per sub-network.

DINO's evaluation (facebookresearch/dino ``eval_knn.py``): k = 20 neighbours vote with weight
exp(cos / T), T = 0.07, on features of a bicubic resize to 256 and a 224 center crop. The weighted vote
itself is InstDisc's (Wu et al. 2018), whose code uses k = 200. Features come from the same cache as
``linear-fast`` when both read the same dataset block, so running both on one checkpoint extracts once.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Literal

from transfer.classify.data import ClassificationData, transform_names
from transfer.classify.knn import knn_predict
from transfer.classify.metrics import topk_correct
from transfer.protocols.linear import subnet_features

from .base import Protocol, Result, RunContext, register_protocol

log = logging.getLogger(__name__)


@dataclass
class KnnData(ClassificationData):
    """The classification dataset block, resized bicubic as DINO's ``eval_knn.py`` (``interpolation=3``)."""

    interpolation: Literal["bilinear", "bicubic"] = "bicubic"


@dataclass
class KnnParams:
    """k=20, T=0.07 (DINO's eval_knn.py defaults); k=200 is InstDisc's, with T=0.1 the other setting in use."""

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
    Dataset = KnnData
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

    def describe(self, ctx: RunContext) -> Dict[str, Any]:
        p, d = ctx.params, ctx.dataset
        return {str(spec): {"k": p.k, "temperature": p.temperature, "vote": "sum of exp(cosine / T) per class",
                            "features": "pooled, L2-normalised", "feature_batch_size": p.batch_size,
                            "feature_transform": transform_names(d.eval_transform())}
                for spec in ctx.subnets}
