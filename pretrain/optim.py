"""Optimizers and schedules of the recipes: SGD or LARS, linear warm-up then cosine decay.

The learning rate is a pure function of the step (``LRSchedule``), so resuming needs only the
step counter; the optimizer's own state (momentum buffers) is saved by the trainer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn


def param_groups(module: nn.Module, weight_decay: float, exclude_bn_bias: bool,
                 lr_scale: Optional[Mapping[str, float]] = None) -> List[dict]:
    """Trainable parameters grouped by weight decay (BN/bias excluded when asked) and lr multiplier.

    A parameter with one dimension is a BatchNorm affine or a bias. The excluded group is also
    skipped by LARS's trust-ratio scaling, as in MoCo v3 and BYOL. ``lr_scale`` maps a child
    module of ``module`` (e.g. ``predictor``) to a multiplier of the scheduled lr, which
    ``set_lr`` applies through each group's ``lr_scale``.
    """
    lr_scale = dict(lr_scale or {})
    children = {name for name, _ in module.named_children()}
    unknown = sorted(set(lr_scale) - children)
    if unknown:
        raise ValueError(f"lr_scale: {type(module).__name__} has no module {unknown[0]!r}; "
                         f"expected one of {', '.join(sorted(children))}")
    buckets: Dict[Tuple[float, bool], List[nn.Parameter]] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        excluded = exclude_bn_bias and p.ndim <= 1
        buckets.setdefault((lr_scale.get(name.split(".")[0], 1.0), excluded), []).append(p)
    return [{"params": params, "weight_decay": 0.0 if excluded else weight_decay, "lars_adapt": not excluded,
             "lr_scale": scale} for (scale, excluded), params in buckets.items()]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratio ``eta * |w| / |g + wd * w|`` (You et al. 2017).

    Groups with ``lars_adapt=False`` (BN and biases) take plain SGD steps, as MoCo v3 does.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, lars_adapt=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad.clone()
                if group["lars_adapt"]:
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    ratio = torch.where((w_norm > 0) & (u_norm > 0),
                                        group["trust_coefficient"] * w_norm / u_norm, torch.ones_like(w_norm))
                    update.mul_(ratio)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(update)
                p.add_(buf, alpha=-group["lr"])
        return loss


def build_optimizer(module: nn.Module, optim) -> torch.optim.Optimizer:
    """The recipe's optimizer (``optim`` is the recipe's ``optim`` section) over ``module``."""
    groups = param_groups(module, optim.weight_decay, optim.exclude_bn_bias, optim.lr_scale)
    if optim.name == "lars":
        return LARS(groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay,
                    trust_coefficient=optim.trust_coefficient)
    return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)


@dataclass(frozen=True)
class LRSchedule:
    """Linear warm-up to ``peak`` over ``warmup_steps``, then cosine decay to ``floor`` at ``total_steps``.

    With ``restart_step`` and ``restart_lr`` set (SlimCLR's ``slim_start_lr``), the lr jumps to
    ``restart_lr`` at that step and decays from there to ``floor`` on a cosine over the rest.
    """

    peak: float
    total_steps: int
    warmup_steps: int = 0
    floor: float = 0.0
    restart_step: Optional[int] = None
    restart_lr: Optional[float] = None

    @staticmethod
    def _cosine(start: float, end: float, progress: float) -> float:
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))

    def __call__(self, step: int) -> float:
        if self.restart_step is not None and self.restart_lr is not None and step >= self.restart_step:
            span = max(self.total_steps - self.restart_step, 1)
            return self._cosine(self.restart_lr, self.floor, (step - self.restart_step) / span)
        if step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        return self._cosine(self.peak, self.floor, (step - self.warmup_steps) / span)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate to ``lr`` times the group's ``lr_scale``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
