"""SlimCLR-MoCo v3: slimmable encoder, projector and predictor; full-width momentum encoder; no queue.

Per step (on top of ``SlimCLR``'s loop over widths)::

    k1, k2    = normalize(key_proj(key_encoder(view1 | view2)))   # full width, no gradient
    q1_w, q2_w = normalize(pred_w(proj_w(encoder_w(view1 | view2))))
    s         = q1_w . all_gather(k2)  and  q2_w . all_gather(k1)  # symmetric; logits s / T
    labels    = this rank's offset + arange(N)
    InfoNCE scaled by 2T as in MoCo v3; momentum 0.99 -> 1 on a cosine schedule.

The heads are MoCo v3's for a ResNet (moco-v3 ``moco/builder.py`` ``MoCo_ResNet``; SlimCLR's
``mocov3_slim`` in ``models/backbones/s_resnet.py``), every linear layer without bias: projector
``feat -> proj_dims[0]*w`` (BN, ReLU) ``-> 256`` (BN without affine), predictor
``256 -> pred_dims[0]*w`` (BN, ReLU) ``-> 256``. ``head_bn: false`` drops the BatchNorms (the
linear layers then get biases), which upstream has no option for.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrain.distributed import concat_all_gather, rank, world_size
from pretrain.models.slim_ops import SlimMLP
from pretrain.models.spec import SubnetSpec, format_width
from pretrain.methods.base import frozen_copy, normal_init_, register_method
from pretrain.methods.slimclr import Similarities, SlimCLR


@register_method("slimclr-mocov3")
class SlimCLRMoCoV3(SlimCLR):
    """SlimCLR on MoCo v3."""

    nce_scale_by_temperature = True
    distill_scaled_logits = True   # s_mocov3.py's contrastive_loss returns q k^T / T, which is distilled

    def __init__(self, encoder, method_recipe, seed: int = 0):
        super().__init__(encoder, method_recipe, seed)
        feat = encoder.num_features(SubnetSpec(encoder.widths[0]))
        bn = method_recipe.head_bn
        # MoCo v3: the projector ends in a BN without affine parameters, the predictor in none; no biases.
        self.projector = SlimMLP([feat, *method_recipe.proj_dims], self.widths, bn=bn, last_bn=bn,
                                 last_bn_affine=False, bias=not bn)
        self.predictor = SlimMLP([method_recipe.proj_dims[-1], *method_recipe.pred_dims], self.widths, bn=bn,
                                 bias=not bn)
        # SlimCLR's projector is the encoder's fc and is initialised with it; its predictor keeps torch's init.
        if method_recipe.head_init_std is not None:
            normal_init_(self.projector, method_recipe.head_init_std)
        self.key_encoder = frozen_copy(encoder)
        self.key_projector = frozen_copy(self.projector)

    def online_and_target(self):
        return [(self.encoder, self.key_encoder), (self.projector, self.key_projector)]

    @torch.no_grad()
    def compute_keys(self, view1, view2):
        self.key_projector.set_width_index(0)
        k1 = F.normalize(self.key_projector(self.key_encoder(view1)), dim=1)
        k2 = F.normalize(self.key_projector(self.key_encoder(view2)), dim=1)
        k1, k2 = concat_all_gather(k1), concat_all_gather(k2)
        self.keep("k1", k1)
        self.keep("k2", k2)
        return k1, k2, k1.shape[0] // world_size()

    def width_similarities(self, index, view1, view2, keys):
        k1, k2, n = keys
        self.encoder.set_subnet(SubnetSpec(self.widths[index]))
        self.projector.set_width_index(index)
        self.predictor.set_width_index(index)
        labels = torch.arange(n, device=view1.device) + n * rank()
        out = []
        for d, (view, k) in enumerate(((view1, k2), (view2, k1)), start=1):
            q = F.normalize(self.predictor(self.projector(self.encoder(view))), dim=1)
            self.keep(f"q{d}/w{format_width(self.widths[index])}", q)
            out.append(Similarities(q @ k.to(q.dtype).T, labels, q))
        return out, {}   # keys come from the batch itself: no stale queue to diagnose
