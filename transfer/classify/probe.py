"""The switchable linear probe: one linear layer per sub-network, trained jointly as SlimCLR does; and the
slimmable probe the paper compares it with (``params.probe: slimmable``): one linear layer shared by every
sub-network, each reading its leading columns (SlimCLR's ``slim_fc='supervised'``, ``SlimmableLinear``).

The full width (the ``teacher``) is trained with cross-entropy; every smaller sub-network with
(cross-entropy + soft cross-entropy to the teacher's detached prediction) / 2, the losses summed
over sub-networks. This is SlimCLR's ``inplace_distill_mixed`` probe loss (main_ssl_lincls.py,
``train_epoch_slim``): softmax of the raw logits, temperature 1, ``slim_loss: sum``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class SwitchableProbe(nn.Module):
    """One ``nn.Linear`` per sub-network, in the order of ``dims``.

    With ``feature_norm`` each linear layer reads its features through a ``BatchNorm1d`` without
    affine parameters (MAE's linear probe): still a linear classifier at evaluation, but one
    learning rate then suits every width, whose feature scales can differ a hundredfold.
    """

    def __init__(self, dims: Sequence[int], num_classes: int, feature_norm: bool = False):
        super().__init__()
        heads = []
        for d in dims:
            linear = nn.Linear(d, num_classes)
            nn.init.normal_(linear.weight, std=0.01)  # MoCo's linear-eval initialisation
            nn.init.zeros_(linear.bias)
            heads.append(nn.Sequential(nn.BatchNorm1d(d, affine=False), linear) if feature_norm else linear)
        self.heads = nn.ModuleList(heads)

    def forward(self, features: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        return [head(f) for head, f in zip(self.heads, features)]


class SlimmableProbe(nn.Module):
    """One ``nn.Linear`` over the widest sub-network's features; sub-network ``i`` uses its leading
    ``dims[i]`` columns and the shared bias (SlimCLR's ``SlimmableLinear``: inputs sliced, every class out).

    ``feature_norm`` puts a ``BatchNorm1d`` without affine parameters before the shared layer, one per
    sub-network (its statistics are its own; the layer's weights are shared).
    """

    def __init__(self, dims: Sequence[int], num_classes: int, feature_norm: bool = False):
        super().__init__()
        self.dims = [int(d) for d in dims]
        self.linear = nn.Linear(max(self.dims), num_classes)
        nn.init.normal_(self.linear.weight, std=0.01)  # MoCo's linear-eval initialisation
        nn.init.zeros_(self.linear.bias)
        self.norms = nn.ModuleList(nn.BatchNorm1d(d, affine=False) for d in self.dims) if feature_norm else None

    def forward(self, features: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        out = []
        for i, f in enumerate(features):
            if self.norms is not None:
                f = self.norms[i](f)
            out.append(F.linear(f, self.linear.weight[:, : f.shape[1]], self.linear.bias))
        return out


PROBES = {"switchable": SwitchableProbe, "slimmable": SlimmableProbe}


def build_probe(kind: str, dims: Sequence[int], num_classes: int, feature_norm: bool = False) -> nn.Module:
    """The probe ``params.probe`` names: ``switchable`` (SlimCLR's evaluation) or ``slimmable``."""
    return PROBES[kind](dims, num_classes, feature_norm)


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to a probability distribution, averaged over the batch."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def switchable_loss(logits: Sequence[torch.Tensor], targets: torch.Tensor, teacher: Optional[int]) -> torch.Tensor:
    """Sum over sub-networks of SlimCLR's probe losses; without a teacher every head uses plain CE."""
    if teacher is None:
        return sum(F.cross_entropy(l, targets) for l in logits)
    soft = F.softmax(logits[teacher].detach(), dim=1)
    loss = F.cross_entropy(logits[teacher], targets)
    for i, l in enumerate(logits):
        if i != teacher:
            loss = loss + (F.cross_entropy(l, targets) + soft_cross_entropy(l, soft)) / 2
    return loss


def teacher_index(subnets: Sequence) -> Optional[int]:
    """Index of the widest full-depth sub-network when there are several, else None."""
    if len(subnets) < 2:
        return None
    full_depth = [i for i, s in enumerate(subnets) if s.depth is None] or list(range(len(subnets)))
    return max(full_depth, key=lambda i: subnets[i].width)


def accuracy_rows(correct: Dict[int, float], total: float) -> Dict[str, float]:
    """``{'top1': %, 'top5': %}`` from correct counts."""
    return {f"top{k}": 100.0 * c / max(total, 1) for k, c in sorted(correct.items())}
