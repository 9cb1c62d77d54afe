"""The supervised slimmable network SlimCLR's paper contrasts with (mzhaoshuai/SlimCLR ``main_slim.py``).

Per step, on one labelled view (``data.augment: slim``, upstream's supervised list)::

    for each width w, full width first:
        logits_w = classifier(encoder_w(x))                  # slimmable: leading features of one weight
        L_w      = CE(logits_w, y)                           # the full width always
                 | -sum softmax(logits_full).detach() * log_softmax(logits_w)   # inplace_distill, sub-networks
    loss = sum_w L_w     (slim_loss: sum; mean divides by the number of widths)

The classifier is upstream's ``slim_fc='supervised'``: one ``SlimmableLinear`` whose width-w network
reads the leading ``features(w)`` inputs and writes every class, initialised N(0, 0.01) with zero
bias (``s_resnet.py`` ``reset_parameters``); ``classifier: switchable`` is ``'supervised_switch'``, one
linear layer per width. With ``model.widths: [1.0]`` it is the ordinary supervised ResNet (the paper's
"supervised normal"). The checkpoint stores the classifier as its probe (per width, sliced from the
shared weight), so ``stored-probe`` suites evaluate it as trained and ``linear`` suites retrain a probe.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrain.models.slim_ops import SlimLinear
from pretrain.models.spec import SubnetSpec, format_width
from pretrain.methods.base import PretrainMethod, StepContext, normal_init_, register_method


def soft_target_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Upstream's ``CrossEntropyLossSoft``: ``-sum(target * log_softmax(logits))`` per sample, batch mean."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


@register_method("supervised")
class SupervisedSlimmable(PretrainMethod):
    """Cross-entropy of every listed width on labelled images (slimmable or switchable classifier)."""

    labelled = True   # the loader yields (images, labels) instead of two views

    def __init__(self, encoder, method_recipe, seed: int = 0):
        super().__init__(encoder, method_recipe, seed)
        self.widths = list(encoder.widths)
        self.features = [encoder.num_features(SubnetSpec(w)) for w in self.widths]
        n = method_recipe.num_classes
        if method_recipe.classifier == "slimmable":
            self.classifier = SlimLinear(self.features[0], n)
        else:
            self.classifier = nn.ModuleList(nn.Linear(f, n) for f in self.features)
        normal_init_(self, std=0.01)

    def logits(self, index: int, features: torch.Tensor) -> torch.Tensor:
        """Class scores of width number ``index`` from its pooled features."""
        if self.cfg.classifier == "slimmable":
            return self.classifier(features)   # reads the leading features of the shared weight
        return self.classifier[index](features)

    def forward(self, images: torch.Tensor, labels: torch.Tensor,
                ctx: StepContext) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        terms: Dict[str, torch.Tensor] = {}
        losses: List[torch.Tensor] = []
        teacher: Optional[torch.Tensor] = None
        for i, width in enumerate(self.widths):
            name = f"w{format_width(width)}"
            self.encoder.set_subnet(SubnetSpec(width))
            logits = self.logits(i, self.encoder(images))
            if i == 0:
                loss = F.cross_entropy(logits, labels)
                teacher = F.softmax(logits.detach().float(), dim=1)   # upstream: .detach() is necessary
            elif self.cfg.inplace_distill:
                loss = soft_target_cross_entropy(logits.float(), teacher)
            else:
                loss = F.cross_entropy(logits, labels)
            terms[f"{name}/ce"] = loss.detach()
            terms[f"{name}/top1"] = (logits.detach().argmax(dim=1) == labels).float().mean() * 100
            if self.network_losses is not None:
                self.network_losses[name] = loss
            losses.append(loss)
        self.encoder.set_subnet(SubnetSpec(self.widths[0]))
        total = torch.stack([loss.float() for loss in losses])
        return (total.sum() if self.cfg.slim_loss == "sum" else total.mean()), terms

    def update_target(self, ctx: StepContext) -> None:
        """No momentum network: the log's ``momentum`` is null."""
        return None

    def leaves_parameters_unused(self, ctx: StepContext) -> bool:
        return False   # every width runs every step, and each uses its own classifier or a slice of the shared one

    def per_step_summary(self) -> List[str]:
        widths = ", ".join(f"w{format_width(w)}" for w in self.widths)
        distill = "in-place distillation from the full width" if self.cfg.inplace_distill else "labels"
        return [f"networks per step: every width ({len(self.widths)} networks: {widths}); sub-networks learn "
                f"from {distill}; losses {'summed' if self.cfg.slim_loss == 'sum' else 'averaged'}; classifier {self.cfg.classifier}"]

    def head_summary(self, index: int) -> Dict[str, str]:
        return {"classifier": f"Linear({self.features[index]}->{self.cfg.num_classes}, {self.cfg.classifier})"}

    def stored_probe(self) -> Optional[dict]:
        """The trained classifier as the checkpoint's switchable probe: one linear layer per width."""
        sd = {}
        for i, f in enumerate(self.features):
            layer = self.classifier if self.cfg.classifier == "slimmable" else self.classifier[i]
            sd[f"heads.{i}.weight"] = layer.weight.detach()[:, :f].cpu().clone()
            sd[f"heads.{i}.bias"] = layer.bias.detach().cpu().clone()
        return {"subnets": [str(SubnetSpec(w)) for w in self.widths], "num_classes": int(self.cfg.num_classes),
                "feature_norm": False, "state_dict": sd,
                "source": f"supervised pretraining ({self.cfg.classifier} classifier)"}
