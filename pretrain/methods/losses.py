"""The losses of SlimCLR and DSPNet, one small function each.

- ``info_nce``: cross-entropy of contrastive logits against the positive's index (MoCo).
- ``soft_cross_entropy``: SEED-style distillation from a teacher's logits to a student's.
- ``byol_loss``: BYOL's normalized MSE, ``2 - 2 cos(p, z)``.
- ``uniformity_loss``: Wang & Isola's uniformity of L2-normalized embeddings on the hypersphere.
- ``width_loss_weights``: SlimCLR's re-weighting of each width's loss by model size.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F

# Every mode of SlimCLR's loss_weights_generate, by name (width_loss_weights has the upstream numbers)
LOSS_WEIGHTINGS = ("slimclr", "proportional", "uniform", "share", "normalized-share", "narrower-sum",
                   "full-plus-largest-sub")


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


def uniformity_loss(x: torch.Tensor, columns: Optional[torch.Tensor] = None, self_offset: int = 0,
                    t: float = 2.0) -> torch.Tensor:
    """Wang & Isola (2020): ``log mean_{i != j} exp(-t ||x_i - x_j||^2)`` over L2-normalized rows.

    Each row of ``x`` is compared with every row of ``columns`` (default ``x`` itself) but its own,
    which sits at ``columns[self_offset + i]``; under DDP ``columns`` is the all-gathered batch, as
    MoCo v3 compares local queries with gathered keys. Lower is more uniform; ``t = 2`` is the paper's.
    """
    rows = F.normalize(x.float(), dim=1)
    cols = rows if columns is None else F.normalize(columns.float(), dim=1)
    sq_dist = (2 - 2 * rows @ cols.T).clamp_min(0)
    own = torch.arange(rows.shape[0], device=rows.device)
    logits = (-t * sq_dist).index_put((own, own + self_offset), torch.tensor(float("-inf"), device=rows.device))
    pairs = rows.shape[0] * (cols.shape[0] - 1)
    return torch.logsumexp(logits.flatten(), dim=0) - math.log(pairs)


def width_loss_weights(widths: Sequence[float], kind: str = "slimclr") -> Dict[float, float]:
    """Weight of each width's loss: every mode of SlimCLR's ``loss_weights_generate`` (``models/utils.py``).

    ``widths`` in the recipe's (descending) order; ``S`` their sum, ``M`` the largest, ``n`` their number.
    By name, with upstream's ``slim_loss_weighted`` number:

    - ``uniform`` (0, and any other number): 1.
    - ``share`` (1): ``round(w / S, 3)``.
    - ``proportional`` (2): ``w / M`` (upstream: ``w``, the same when the largest width is 1.0).
    - ``normalized-share`` (3): ``round(w / S * n, 3)``.
    - ``slimclr`` (5, the paper's): ``1 + S - M`` for the largest width, 1 for the others.
    - ``narrower-sum`` (6): ``1 + S - (w + every wider width)``, scaled to sum to ``n``, rounded to 3 decimals.
    - ``full-plus-largest-sub`` (7): ``1 + (the largest other width)`` for the largest width, 1 for the others.
    """
    widths = [float(w) for w in widths]
    top, total, n = max(widths), sum(widths), len(widths)
    if kind == "slimclr":
        return {w: (1.0 + total - top) if w == top else 1.0 for w in widths}
    if kind == "proportional":
        return {w: w / top for w in widths}
    if kind == "uniform":
        return {w: 1.0 for w in widths}
    if kind == "share":
        return {w: round(w / total, 3) for w in widths}
    if kind == "normalized-share":
        return {w: round(w / total * n, 3) for w in widths}
    if kind == "narrower-sum":
        raw = [total - sum(widths[: i + 1]) + 1.0 for i in range(n)]
        return {w: round(r / sum(raw) * n, 3) for w, r in zip(widths, raw)}
    if kind == "full-plus-largest-sub":
        others = [w for w in widths if w != top]
        return {w: (1.0 + max(others)) if w == top else 1.0 for w in widths} if others else {top: 1.0}
    raise ValueError(f"unknown loss weighting {kind!r}; expected one of {', '.join(LOSS_WEIGHTINGS)}")
