"""What every pretraining method provides to the trainer, and the registry of methods by name.

A method is an ``nn.Module`` whose ``forward(view1, view2, ctx)`` returns ``(loss, terms)`` for
one step: ``loss`` the scalar to minimise, ``terms`` a flat dict of detached tensors to log
(e.g. ``w0.5/kd``). After the optimizer step the trainer calls ``update_target(ctx)`` for the
momentum (EMA) encoder. Parameters of EMA copies have ``requires_grad=False``, so the
optimizer and DDP leave them alone.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Type

import torch
import torch.nn as nn

from pretrain.models.resnet import SlimResNet

METHODS: Dict[str, Type["PretrainMethod"]] = {}


@dataclass(frozen=True)
class StepContext:
    """Where the run is when a step begins."""

    step: int                 # 0-based index of this step
    total_steps: int          # steps of the whole schedule
    epoch: float              # fractional epoch at the start of the step
    slim_active: bool = True  # SlimCLR slow start: False while only the full width trains


def register_method(name: str) -> Callable[[Type["PretrainMethod"]], Type["PretrainMethod"]]:
    """Class decorator registering a method under the name recipes use."""
    def wrap(cls):
        cls.name = name
        METHODS[name] = cls
        return cls
    return wrap


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` that gets no gradient (the momentum / target network)."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target = m * target + (1 - m) * online`` over parameters (buffers stay the target's own)."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(momentum).add_(o.detach(), alpha=1.0 - momentum)


@torch.no_grad()
def normal_init_(module: nn.Module, std: float) -> None:
    """Linear weights from ``N(0, std)`` and zero biases (SlimCLR's ``s_resnet.py`` ``reset_parameters``)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            m.weight.normal_(0.0, std)
            if m.bias is not None:
                m.bias.zero_()


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """BYOL's schedule: ``1 - (1 - base) * (cos(pi k / K) + 1) / 2``, rising from ``base`` to 1."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


class PretrainMethod(nn.Module):
    """Base of SlimCLR-MoCo v2 / v3 and DSPNet-BYOL; subclasses define ``forward(view1, view2, ctx)``."""

    name = "?"
    labelled = False   # True: forward gets (images, labels) from a labelled loader instead of two views

    def __init__(self, encoder: SlimResNet, method_recipe, seed: int = 0):
        super().__init__()
        self.encoder = encoder
        self.cfg = method_recipe
        self.seed = seed
        # Set to {} for one step to keep each network's own loss, with its graph, by name (the trainer's
        # gradient-cosine diagnostic, run.diagnose_cosine); None keeps nothing.
        self.network_losses: Optional[Dict[str, torch.Tensor]] = None

    def momentum_at(self, ctx: StepContext) -> float:
        """The EMA momentum after step ``ctx.step``."""
        if self.cfg.momentum_schedule == "cosine":
            return cosine_momentum(self.cfg.momentum, ctx.step, ctx.total_steps)
        return self.cfg.momentum

    def online_and_target(self) -> List[Tuple[nn.Module, nn.Module]]:
        """(online, target) module pairs the EMA updates."""
        return []

    @torch.no_grad()
    def update_target(self, ctx: StepContext) -> float:
        """EMA step of every target module; returns the momentum used."""
        m = self.momentum_at(ctx)
        for online, target in self.online_and_target():
            ema_update(target, online, m)
        return m

    def head_summary(self, index: int) -> Dict[str, str]:
        """The layers of each trained head at the listed width number ``index``, e.g. for ``--dry-run``."""
        from pretrain.models.slim_ops import SlimMLP
        from pretrain.models.spec import SubnetSpec

        features = self.encoder.num_features(SubnetSpec(self.encoder.widths[index]))
        out = {}
        for name, module in self.named_children():   # heads in the order they run (projector, predictor)
            if isinstance(module, SlimMLP) and any(p.requires_grad for p in module.parameters()):
                out[name], features = module.describe(index, features)
        return out

    def step_signature(self, ctx: StepContext) -> str:
        """A name for what a step computes: steps with one signature cost the same FLOPs."""
        return "step"

    def leaves_parameters_unused(self, ctx: StepContext) -> bool:
        """Whether the step at ``ctx`` leaves a trainable parameter without gradient (DDP must then
        search for unused parameters); methods that know better override this safe default."""
        return True

    def per_step_summary(self) -> List[str]:
        """Lines saying which networks a step trains (``bench pretrain --dry-run`` prints them)."""
        return []

    def desired(self) -> List[str]:
        """Sub-network names recorded in the checkpoint as the ones to show first."""
        return []

    def stored_probe(self) -> Optional[dict]:
        """A classifier the method trained, to store as the checkpoint's probe (``pretrain.checkpoints.format``); None."""
        return None

    def diagnose(self, logged: Dict[str, float]) -> List[Dict[str, str]]:
        """Warnings about the last logged terms, ``{"subnet", "message"}`` each (e.g. a network that
        tells no two images apart); checkpoints record them and the comparison marks those networks."""
        return []


def build_method(recipe, encoder: SlimResNet) -> PretrainMethod:
    """Instantiate the method named by ``recipe.method.name`` around ``encoder``."""
    return METHODS[recipe.method.name](encoder, recipe.method, seed=recipe.run.seed)
