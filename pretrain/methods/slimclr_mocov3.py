"""SlimCLR-MoCo v3: slimmable encoder, projector and predictor; full-width momentum encoder; no queue.

Per step (on top of ``SlimCLR``'s loop over widths)::

    k1, k2    = normalize(key_proj(key_encoder(view1 | view2)))   # full width, no gradient
    q1_w, q2_w = normalize(pred_w(proj_w(encoder_w(view1 | view2))))
    logits    = q1_w . all_gather(k2) / T  and  q2_w . all_gather(k1) / T   # symmetric
    labels    = this rank's offset + arange(N)
    InfoNCE scaled by 2T as in MoCo v3; momentum 0.99 -> 1 on a cosine schedule.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..distributed import concat_all_gather, rank
from ..slim_ops import SlimMLP
from ..spec import SubnetSpec
from .base import frozen_copy, register_method
from .slimclr import SlimCLR


@register_method("slimclr-mocov3")
class SlimCLRMoCoV3(SlimCLR):
    """SlimCLR on MoCo v3."""

    nce_scale_by_temperature = True

    def __init__(self, encoder, method_recipe, seed: int = 0):
        super().__init__(encoder, method_recipe, seed)
        feat = encoder.num_features(SubnetSpec(encoder.widths[0]))
        bn = method_recipe.head_bn
        # MoCo v3: the projector ends in a BN without affine parameters, the predictor in none.
        self.projector = SlimMLP([feat, *method_recipe.proj_dims], self.widths, bn=bn, last_bn=bn,
                                 last_bn_affine=False)
        self.predictor = SlimMLP([method_recipe.proj_dims[-1], *method_recipe.pred_dims], self.widths, bn=bn)
        self.key_encoder = frozen_copy(encoder)
        self.key_projector = frozen_copy(self.projector)

    def online_and_target(self):
        return [(self.encoder, self.key_encoder), (self.projector, self.key_projector)]

    @torch.no_grad()
    def compute_keys(self, view1, view2):
        self.key_projector.set_width_index(0)
        k1 = F.normalize(self.key_projector(self.key_encoder(view1)), dim=1)
        k2 = F.normalize(self.key_projector(self.key_encoder(view2)), dim=1)
        return concat_all_gather(k1), concat_all_gather(k2), k1.shape[0]

    def width_logits(self, index, view1, view2, keys):
        k1, k2, n = keys
        self.encoder.set_subnet(SubnetSpec(self.widths[index]))
        self.projector.set_width_index(index)
        self.predictor.set_width_index(index)
        labels = torch.arange(n, device=view1.device) + n * rank()
        out = []
        for view, k in ((view1, k2), (view2, k1)):
            q = F.normalize(self.predictor(self.projector(self.encoder(view))), dim=1)
            out.append((q @ k.to(q.dtype).T / self.cfg.temperature, labels))
        return out
