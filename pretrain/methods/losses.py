"""The losses of SlimCLR and DSPNet, one small function each.

- ``info_nce``: cross-entropy of contrastive logits against the positive's index (MoCo).
- ``nt_xent_similarities``: SimCLR's cosines and positives over the 2N views of a batch (``s_simclr.py``).
- ``soft_cross_entropy``: SEED-style distillation from a teacher's logits to a student's.
- ``dkd_loss``, ``atkd_loss``, ``distill_loss``: the other distillations of SlimCLR's ``models/distiller``.
- ``byol_loss``: BYOL's normalized MSE, ``2 - 2 cos(p, z)``.
- ``uniformity_loss``: Wang & Isola's uniformity of L2-normalized embeddings on the hypersphere.
- ``width_loss_weights``: SlimCLR's re-weighting of each width's loss by model size.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

# SlimCLR's distillations (models/distiller/factory.py choose_kd_loss), by name; "none" turns it off
DISTILLATIONS = ("none", "kd", "mse", "dkd", "atkd")
# DKD's and ATKD's parameters as choose_kd_loss fixes them (the recipe's temperatures are KD's only)
DKD_ALPHA, DKD_BETA, DKD_TEMPERATURE = 1.0, 0.5, 1.0
ATKD_MULTIPLIER, ATKD_TEMPERATURE, ATKD_EPS = 2.0, 4.0, 1e-5

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


def nt_xent_similarities(z1: torch.Tensor, z2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's ``(cosines, labels)`` for L2-normalized embeddings of two views ``z1``, ``z2`` (N, D each).

    The 2N embeddings are compared with each other but not themselves (``[2N, 2N - 1]`` cosines, the
    diagonal removed); row ``i``'s positive is the other view of its image, column ``N + i - 1`` for the
    first view and ``i`` for the second (upstream SlimCLR's ``s_simclr.py`` labels).
    """
    n = z1.shape[0]
    z = torch.cat([z1, z2]).float()
    off_diagonal = ~torch.eye(2 * n, dtype=torch.bool, device=z.device)
    cosines = (z @ z.T)[off_diagonal].view(2 * n, 2 * n - 1)
    idx = torch.arange(n, device=z.device)
    return cosines, torch.cat([idx + n - 1, idx])


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
             alpha: float = DKD_ALPHA, beta: float = DKD_BETA, temperature: float = DKD_TEMPERATURE) -> torch.Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022): ``alpha`` TCKD + ``beta`` NCKD, each ``T**2``-scaled, batch mean.

    TCKD is the KL divergence of the binary (target, rest) probabilities; NCKD that of the distributions
    over the non-target classes (the target's logit pushed down by 1000 before the softmax, as mdistiller).
    """
    s, t = student_logits.float() / temperature, teacher_logits.detach().float() / temperature
    target = F.one_hot(labels, s.shape[1]).bool()
    p_s, p_t = F.softmax(s, dim=1), F.softmax(t, dim=1)
    binary_s = torch.stack([p_s[target], p_s.masked_fill(target, 0).sum(1)], dim=1)
    binary_t = torch.stack([p_t[target], p_t.masked_fill(target, 0).sum(1)], dim=1)
    n = s.shape[0]
    tckd = F.kl_div(binary_s.log(), binary_t, reduction="sum") * temperature ** 2 / n
    nckd = F.kl_div(F.log_softmax(s - 1000.0 * target, dim=1), F.softmax(t - 1000.0 * target, dim=1),
                    reduction="sum") * temperature ** 2 / n
    return alpha * tckd + beta * nckd


def atkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, multiplier: float = ATKD_MULTIPLIER,
              temperature: float = ATKD_TEMPERATURE, eps: float = ATKD_EPS) -> torch.Tensor:
    """Adaptive-temperature KD (SlimCLR's ``ATKD.py`` version 2, the one it runs): KL divergence of the
    row-standardized logits (zero mean, unit variance, times ``multiplier``) at ``temperature``, ``T**2``-scaled."""
    c = student_logits.shape[-1]
    s = F.layer_norm(student_logits.float(), (c,), eps=eps) * multiplier
    t = F.layer_norm(teacher_logits.detach().float(), (c,), eps=eps) * multiplier
    return F.kl_div(F.log_softmax(s / temperature, dim=-1), F.softmax(t / temperature, dim=-1),
                    reduction="batchmean") * temperature ** 2


def distill_loss(kind: str, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                 student_temp: float, teacher_temp: float) -> torch.Tensor:
    """One of ``DISTILLATIONS`` from a (detached) teacher to a student, as SlimCLR's ``choose_kd_loss``.

    ``kd``: ``soft_cross_entropy`` at the recipe's temperatures; ``mse``: mean squared error;
    ``dkd``/``atkd``: at their fixed upstream parameters (``labels`` are the positives' indices, DKD's target).
    """
    if kind == "kd":
        return soft_cross_entropy(student, teacher, student_temp, teacher_temp)
    if kind == "mse":
        return F.mse_loss(student.float(), teacher.detach().float())
    if kind == "dkd":
        return dkd_loss(student, teacher, labels)
    if kind == "atkd":
        return atkd_loss(student, teacher)
    raise ValueError(f"unknown distillation {kind!r}; expected one of {', '.join(DISTILLATIONS[1:])}")


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
