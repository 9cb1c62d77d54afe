"""Top-k accuracy counts."""
from __future__ import annotations

from typing import Dict, Sequence

import torch


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)) -> Dict[int, int]:
    """Number of samples whose label is among the ``k`` highest scores, for each ``k`` (clipped to the classes)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top.eq(targets.view(-1, 1))
    return {k: int(hit[:, :min(k, kmax)].any(dim=1).sum()) for k in ks}
