"""The losses of SlimCLR and DSPNet, one small function each.

- ``info_nce``: cross-entropy of contrastive logits against the positive's index (MoCo).
- ``soft_cross_entropy``: SEED-style distillation from a teacher's logits to a student's.
- ``byol_loss``: BYOL's normalized MSE, ``2 - 2 cos(p, z)``.
- ``width_loss_weights``: SlimCLR's re-weighting of each width's loss by model size.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F

LOSS_WEIGHTINGS = ("slimclr", "proportional", "uniform")


def info_nce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean InfoNCE: cross-entropy of ``logits`` (N, C, already divided by the temperature) at ``labels``."""
    return F.cross_entropy(logits.float(), labels)


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       student_temp: float, teacher_temp: float) -> torch.Tensor:
    """SEED-style distillation: ``-sum softmax(t / T_t) * log_softmax(s / T_s)``, batch mean, times ``T_s**2``.

    The teacher is detached here, so no gradient reaches it whatever the caller passes. The
    ``T_s**2`` factor keeps the gradient scale independent of the temperature (Hinton et al.).
    """
    target = F.softmax(teacher_logits.detach().float() / teacher_temp, dim=1)
    log_prob = F.log_softmax(student_logits.float() / student_temp, dim=1)
    return -(target * log_prob).sum(dim=1).mean() * student_temp ** 2


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL's normalized MSE between an online prediction and a (detached) target projection."""
    p = F.normalize(prediction.float(), dim=1)
    z = F.normalize(target.detach().float(), dim=1)
    return (2 - 2 * (p * z).sum(dim=1)).mean()


def width_loss_weights(widths: Sequence[float], kind: str = "slimclr") -> Dict[float, float]:
    """Weight of each width's loss.

    ``slimclr``: the full width gets ``1 + sum(widths) - max(widths)`` and every sub-network 1
    (2.5 for 1.0/0.75/0.5/0.25), so the full network's gradient is not drowned by the others.
    ``proportional``: each width's weight is its width relative to the largest.
    ``uniform``: 1 for every width.
    """
    widths = [float(w) for w in widths]
    top = max(widths)
    if kind == "slimclr":
        return {w: (1.0 + sum(widths) - top) if w == top else 1.0 for w in widths}
    if kind == "proportional":
        return {w: w / top for w in widths}
    if kind == "uniform":
        return {w: 1.0 for w in widths}
    raise ValueError(f"unknown loss weighting {kind!r}; expected one of {', '.join(LOSS_WEIGHTINGS)}")
