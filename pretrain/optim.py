"""Optimizers and schedules of the recipes: SGD or LARS, linear warm-up then cosine decay (SlimCLR's).

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
    """SlimCLR's learning rate (``utils/lr_scheduler.py``, mode ``cos``, as ``main_ssl.py`` drives it).

    At step ``t`` (0-based, before the step) with base lr ``b``: warm-up ``min(floor + t/W * (b - floor), b)``
    while ``t <= W`` (``W = warmup_steps``, a float as upstream's ``warmup_proportion * all_iters``),
    then ``0.5 * b * (1 + cos(pi * (t - W) / (total_steps - W)))``, never below ``floor``.
    From ``replace_step`` on the base lr is ``replace_lr`` (SlimCLR's ``slim_start_lr``: upstream sets
    ``scheduler.init_lr`` at ``slim_start_epoch``), so warm-up and cosine keep their place in the one
    global schedule. MoCo v3's and BYOL's warm-up-cosine is the same curve with ``floor = 0``.
    """

    peak: float
    total_steps: int
    warmup_steps: float = 0.0
    floor: float = 0.0
    replace_step: Optional[int] = None
    replace_lr: Optional[float] = None

    def base(self, step: int) -> float:
        """The base lr in force at ``step``."""
        replaced = self.replace_step is not None and self.replace_lr is not None and step >= self.replace_step
        return self.replace_lr if replaced else self.peak

    def __call__(self, step: int) -> float:
        base, warm = self.base(step), self.warmup_steps
        if warm > 0 and step <= warm:
            lr = min(self.floor + step / warm * (base - self.floor), base)
        else:
            progress = min((step - warm) / max(self.total_steps - warm, 1e-12), 1.0)
            lr = 0.5 * base * (1.0 + math.cos(math.pi * progress))
        return max(lr, self.floor)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate to ``lr`` times the group's ``lr_scale``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
