"""SlimBench's reconstruction of DSPNet (unverified against the paper) on BYOL.

One online slimmable network trains sampled sub-networks against an EMA target. DSPNet has no public
code and no readable copy of its method section; this is built from its abstract and introduction
(BYOL, an EMA target of the full network, sampled sub-networks that include the desired networks,
width x depth), and it names each choice that reading leaves open. Per step::

    z1', z2'  = target_proj(target_encoder(view1 | view2))      # full network, no gradient
    subnets   = sample(method.sample)                            # see below
    for each sub-network s:
        p1, p2 = pred_s(proj_s(encoder_s(view1 | view2)))
        loss  += byol(p1, z2') + byol(p2, z1')                   # 2 - 2 cos, symmetric
        loss  += u * (unif(p1) + unif(p2))                       # only if uniformity_weight u > 0
    target   <- m * target + (1 - m) * online (full network),   m: 0.996 -> 1 (cosine)

Choices the paper leaves open: the losses of the sampled sub-networks are summed (as in the
sandwich rule of US-Nets); depth variants share the switchable BN of their width, but only the
full-depth network updates its running statistics (a shallower network feeds later blocks other
inputs, and mixing both would leave the stored width fitting neither; depth variants are
calibrated at extraction instead, as BigNAS and OFA calibrate their children); heads slim
with the width, and the projection ends as BYOL's (a linear layer) unless ``proj_last_bn``
standardises it as SimSiam does (then no target can be matched by its batch mean alone);
``uniformity_weight`` adds Wang & Isola's uniformity of each network's predictions, which is
not DSPNet's: BYOL has no term that spreads the embeddings, and in short runs its small widths
keep features of lower rank than their random init (the demo recipe uses it; default off);
"smallest" is the smallest width at the shallowest depth of the grid; random members are drawn
without replacement from the grid minus the networks already chosen, with a generator seeded
by the run seed (identical on every rank, saved for resumption).

Sampling rules (``method.sample``): ``sandwich-desired`` (SlimBench's DSPNet: the abstract says the
sampled networks include the desired ones) trains the largest, the smallest, every desired network and
``num_random`` more; ``sandwich`` is US-Nets' rule (JiahuiYu/slimmable_networks ``train.py``: the largest,
the smallest and ``num_sample_training - 2`` random ones); ``desired`` only the desired networks (an
individual baseline).
"""
from __future__ import annotations

import contextlib
from typing import Dict, List, Tuple

import torch

from pretrain.distributed import gather_with_local_grad, rank
from pretrain.methods.losses import byol_loss, uniformity_loss
from pretrain.models.slim_ops import SlimMLP, frozen_bn_stats
from pretrain.models.spec import SubnetSpec
from pretrain.methods.base import PretrainMethod, StepContext, frozen_copy, register_method


@register_method("dspnet-byol")
class DSPNetBYOL(PretrainMethod):
    """DSPNet with BYOL's online/target networks."""

    def __init__(self, encoder, method_recipe, seed: int = 0):
        super().__init__(encoder, method_recipe, seed)
        widths = list(encoder.widths)
        feat = encoder.num_features(SubnetSpec(widths[0]))
        self.projector = SlimMLP([feat, *method_recipe.proj_dims], widths, bn=True,
                                 last_bn=method_recipe.proj_last_bn, last_bn_affine=False)
        self.predictor = SlimMLP([method_recipe.proj_dims[-1], *method_recipe.pred_dims], widths, bn=True)
        self.target_encoder = frozen_copy(encoder)
        self.target_projector = frozen_copy(self.projector)
        depths = [None] + [tuple(d) for d in method_recipe.depths]
        grid = [SubnetSpec(w, d).canonical(encoder.stage_blocks) for w in widths for d in depths]
        self.grid: List[SubnetSpec] = list(dict.fromkeys(grid))
        self.largest = SubnetSpec(widths[0])
        shallowest = min(depths, key=lambda d: sum(d) if d is not None else sum(encoder.stage_blocks))
        self.smallest = SubnetSpec(widths[-1], shallowest).canonical(encoder.stage_blocks)
        self.desired_specs = [encoder.check_subnet(d) for d in method_recipe.desired]
        self.generator = torch.Generator().manual_seed(seed)

    def online_and_target(self):
        return [(self.encoder, self.target_encoder), (self.projector, self.target_projector)]

    def desired(self) -> List[str]:
        return [str(s) for s in self.desired_specs]

    def step_signature(self, ctx: StepContext) -> str:
        """The networks the next step samples, read from a copy of the generator's state."""
        state = self.generator.get_state()
        specs = self.sample_subnets()
        self.generator.set_state(state)
        return "+".join(str(s) for s in specs)

    def leaves_parameters_unused(self, ctx: StepContext) -> bool:
        """Whether the next step's networks miss a parameter: each listed width has its own BatchNorms,
        so every block must run at every width, in a full-depth network or across shallower ones."""
        state = self.generator.get_state()
        specs = self.sample_subnets()
        self.generator.set_state(state)
        full = tuple(self.encoder.stage_blocks)
        for width in self.encoder.widths:
            depths = [s.depth or full for s in specs if s.width == width]
            if not depths or any(max(d[i] for d in depths) < full[i] for i in range(len(full))):
                return True
        return False

    def sample_subnets(self) -> List[SubnetSpec]:
        """This step's sub-networks under ``method.sample`` (see the module docstring)."""
        if self.cfg.sample == "desired":
            return list(self.desired_specs)
        forced = [self.largest, self.smallest]
        if self.cfg.sample == "sandwich-desired":
            forced += self.desired_specs
        chosen = list(dict.fromkeys(forced))
        rest = [s for s in self.grid if s not in chosen]
        picks = torch.randperm(len(rest), generator=self.generator)[: self.cfg.num_random].tolist()
        return chosen + [rest[i] for i in sorted(picks)]

    def per_step_summary(self) -> List[str]:
        """The networks every step trains under ``method.sample``, and how many are drawn at random."""
        rule = self.cfg.sample
        if rule == "desired":
            return [f"sample: desired: {len(self.desired_specs)} networks per step: "
                    f"{', '.join(map(str, self.desired_specs))}"]
        forced = [self.largest, self.smallest] + (self.desired_specs if rule == "sandwich-desired" else [])
        chosen = list(dict.fromkeys(forced))
        random = min(self.cfg.num_random, len(self.grid) - len(chosen))
        return [f"sample: {rule}: {len(chosen) + random} networks per step: every step "
                f"{', '.join(map(str, chosen))}, plus {random} drawn from the other "
                f"{len(self.grid) - len(chosen)} of the width x depth grid"]

    def forward(self, view1: torch.Tensor, view2: torch.Tensor,
                ctx: StepContext) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        with torch.no_grad():
            self.target_projector.set_width_index(0)
            z1 = self.target_projector(self.target_encoder(view1))
            z2 = self.target_projector(self.target_encoder(view2))
        total = view1.new_zeros((), dtype=torch.float32)
        terms: Dict[str, torch.Tensor] = {}
        for spec in self.sample_subnets():
            self.encoder.set_subnet(spec)
            index = self.encoder.width_index(spec.width)
            self.projector.set_width_index(index)
            self.predictor.set_width_index(index)
            # Running statistics are the full-depth network's; a network trained alone keeps its own.
            own_stats = spec.depth is None or self.cfg.sample == "desired"
            with contextlib.nullcontext() if own_stats else frozen_bn_stats(self.encoder):
                f1, f2 = self.encoder(view1), self.encoder(view2)
            p1 = self.predictor(self.projector(f1))
            p2 = self.predictor(self.projector(f2))
            loss = byol_loss(p1, z2) + byol_loss(p2, z1)
            terms[f"{spec}/byol"] = loss.detach()
            if self.cfg.uniformity_weight:
                spread = self._uniformity(p1) + self._uniformity(p2)
                terms[f"{spec}/uniformity"] = spread.detach()
                loss = loss + self.cfg.uniformity_weight * spread
            total = total + loss
            if self.network_losses is not None:
                self.network_losses[str(spec)] = loss
        self.encoder.set_subnet(self.largest)
        return total, terms

    @staticmethod
    def _uniformity(p: torch.Tensor) -> torch.Tensor:
        """Uniformity of this rank's predictions against the whole batch (other ranks' detached)."""
        return uniformity_loss(p, gather_with_local_grad(p), self_offset=rank() * p.shape[0])

    # The sampling generator travels with the state dict, so a resumed run samples the same networks.
    def get_extra_state(self):
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state) -> None:
        self.generator.set_state(state["generator"])
