"""What SlimCLR adds to a contrastive method: slow start, online distillation, loss re-weighting.

SlimCLR (Zhao & Wang, IJCV 2024; mzhaoshuai/SlimCLR ``models/s_moco.py``, ``s_mocov3.py``), per step::

    keys  = full-width key (momentum) encoder on the other view        # no gradient
    for each width w, full width first:                                # all widths after slow start
        s_w   = cosine similarities of query(w) with the keys (and the queue)
        L_w   = InfoNCE(s_w / T)                                       # x 2T for MoCo v3
        if w is a sub-network and distillation is on:
            L_w = (1 - a) * L_w + a * mean over teachers t of D(d_w, d_t.detach())
    loss = sum_w weight_w * L_w          # weight_full = 1 + sum(widths) - max(widths), others 1

``D`` is ``method.distill`` (SlimCLR's ``choose_kd_loss``): ``kd`` is SEED's
``T_s^2 * CE(softmax(d_t / T_t), log_softmax(d_w / T_s))``, the paper's; ``mse``, ``dkd``, ``atkd`` the
others upstream has. The teacher is the full width, and with ``full_distill`` also every wider
sub-network. The distilled ``d_w`` are, with ``distill_on: logits``, what upstream's loss function
returns beside the loss: the raw similarities ``s_w`` for MoCo v2 and SimCLR (their cross-entropy
applies T inside) and ``s_w / T`` for MoCo v3 (``contrastive_loss`` returns ``q k^T / T``), so ``T``
never enters the distillation twice; with ``distill_on: features``, the normalized query embeddings.
Before ``slim_start_epoch`` only the full width runs (weight 1), so sub-network losses are zero and
parameters used only by sub-networks get no gradient. The variants (MoCo v2 with a queue, MoCo v3
symmetric without one, SimCLR within the batch) say how keys and similarities are made.
"""
from __future__ import annotations

import abc
from typing import Dict, List, NamedTuple, Tuple

import torch

from pretrain.methods.losses import distill_loss, info_nce, width_loss_weights
from pretrain.models.spec import SubnetSpec, format_width
from pretrain.methods.base import PretrainMethod, StepContext


class Similarities(NamedTuple):
    """One loss direction of one network: what its contrastive loss and its distillation read."""

    cosines: torch.Tensor      # (rows, candidates) cosine similarities, not divided by the temperature
    labels: torch.Tensor       # each row's positive candidate
    embeddings: torch.Tensor   # the rows' normalized query embeddings (distill_on: features)


class SlimCLR(PretrainMethod, abc.ABC):
    """The SlimCLR step; subclasses implement ``compute_keys``, ``width_similarities`` and ``after_keys``."""

    # MoCo v3 scales its contrastive loss by 2T and distils the logits divided by T; MoCo v2 neither.
    nce_scale_by_temperature = False
    distill_scaled_logits = False

    def __init__(self, encoder, method_recipe, seed: int = 0):
        super().__init__(encoder, method_recipe, seed)
        self.widths = list(encoder.widths)
        self.loss_weights = width_loss_weights(self.widths, method_recipe.loss_weights)
        self.recorded = None   # set to {} to keep the step's embeddings (parity tests)

    def keep(self, name: str, tensor: torch.Tensor) -> None:
        """Keep a detached copy of one of the step's embeddings when ``recorded`` is a dict."""
        if self.recorded is not None:
            self.recorded[name] = tensor.detach().clone()

    @abc.abstractmethod
    def compute_keys(self, view1: torch.Tensor, view2: torch.Tensor):
        """Full-width keys from the momentum encoder (no gradient)."""

    @abc.abstractmethod
    def width_similarities(self, index: int, view1: torch.Tensor, view2: torch.Tensor,
                           keys) -> Tuple[List[Similarities], Dict[str, torch.Tensor]]:
        """Cosine similarities (not divided by the temperature) of the query at width ``index`` with the
        keys, and detached diagnostics of them to log beside the loss (e.g. MoCo v2's ``pos``)."""

    def after_keys(self, keys) -> None:
        """Hook after the loss is built (MoCo v2 enqueues its keys here)."""

    def step_signature(self, ctx: StepContext) -> str:
        return "all widths" if ctx.slim_active and len(self.widths) > 1 else "full width"

    def per_step_summary(self) -> List[str]:
        widths = ", ".join(f"w{format_width(w)}" for w in self.widths)
        start = self.cfg.slim_start_epoch
        before = f"before epoch {start:g} only w{format_width(self.widths[0])} (1 network), then " if start else ""
        return [f"networks per step: {before}every width ({len(self.widths)} networks: {widths})"]

    def leaves_parameters_unused(self, ctx: StepContext) -> bool:
        """During the slow start only the full width trains: the other widths' BatchNorms get no gradient."""
        return not ctx.slim_active and len(self.widths) > 1

    def momentum_at(self, ctx: StepContext) -> float:
        """The EMA after step ``s`` is the one upstream makes before step ``s + 1``, at that step's momentum."""
        return super().momentum_at(StepContext(ctx.step + 1, ctx.total_steps, ctx.epoch, ctx.slim_active))

    def contrastive_loss(self, sims: Similarities) -> torch.Tensor:
        """The contrastive loss of one direction: InfoNCE of the cosines divided by the temperature."""
        return info_nce(sims.cosines / self.cfg.temperature, sims.labels)

    def distill_target(self, sims: Similarities) -> torch.Tensor:
        """What ``method.distill`` compares between networks for one direction (see the module docstring)."""
        if self.cfg.distill_on == "features":
            return sims.embeddings
        return sims.cosines / self.cfg.temperature if self.distill_scaled_logits else sims.cosines

    def forward(self, view1: torch.Tensor, view2: torch.Tensor,
                ctx: StepContext) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        cfg = self.cfg
        nce_scale = 2.0 * cfg.temperature if self.nce_scale_by_temperature else 1.0
        keys = self.compute_keys(view1, view2)
        widths = self.widths if ctx.slim_active else self.widths[:1]
        total = view1.new_zeros((), dtype=torch.float32)
        terms: Dict[str, torch.Tensor] = {}
        teachers: List[List[torch.Tensor]] = []   # per teaching network, its detached targets per direction
        for i, width in enumerate(widths):
            name = f"w{format_width(width)}"
            directions, diagnostics = self.width_similarities(i, view1, view2, keys)
            nce = sum(self.contrastive_loss(sims) for sims in directions) * nce_scale
            terms[f"{name}/infonce"] = nce.detach()
            terms.update({f"{name}/{key}": value for key, value in diagnostics.items()})
            loss = nce
            targets = [self.distill_target(sims) for sims in directions]
            if i > 0 and cfg.distill != "none":
                # upstream averages over the teachers, direction by direction, and sums the directions
                kd = sum(sum(distill_loss(cfg.distill, target, teacher[d], sims.labels, cfg.student_temp,
                                          cfg.teacher_temp) for teacher in teachers) / len(teachers)
                         for d, (sims, target) in enumerate(zip(directions, targets)))
                terms[f"{name}/{cfg.distill}"] = kd.detach()
                loss = (1.0 - cfg.distill_alpha) * nce + cfg.distill_alpha * kd
            if i == 0 or cfg.full_distill:
                teachers.append([target.detach() for target in targets])
            # Re-weighting balances the full width against the sub-networks; alone, it keeps weight 1.
            weight = self.loss_weights[width] if ctx.slim_active else 1.0
            total = total + weight * loss
            if self.network_losses is not None:
                self.network_losses[name] = loss
        self.encoder.set_subnet(SubnetSpec(self.widths[0]))
        self.after_keys(keys)
        return total, terms
