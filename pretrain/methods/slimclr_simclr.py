"""SlimCLR-SimCLR: slimmable encoder and projection head, no momentum encoder, NT-Xent within the batch.

Per step (on top of ``SlimCLR``'s loop over widths), as upstream SlimCLR's ``models/s_simclr.py``::

    z1_w, z2_w = normalize(head_w(encoder_w(view1 | view2)))
    Z_w        = all_gather([z1_w; z2_w])                      # every rank's 2N views; own slice keeps its grad
    s_w        = Z_w Z_w^T without the diagonal                # (2N, 2N - 1) cosines
    labels     = the other view of each row's image            # N + i - 1 for view 1, i for view 2
    L_w        = CE(s_w / T, labels)                           # NT-Xent, mean over the 2N rows

The head is SimCLR's (``s_resnet.py`` ``simclr_slim``; google-research/simclr ``model_util.py``):
``feat -> proj_dims[0]*w`` (with bias; BN, ReLU) ``-> proj_dims[1]`` (no bias; BN with affine). Like
upstream, every rank computes the loss of the whole gathered batch; gradients reach the embeddings
of its own images only, and DDP averages them over the ranks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrain.distributed import gather_with_local_grad
from pretrain.methods.base import StepContext, normal_init_, register_method
from pretrain.methods.losses import nt_xent_similarities
from pretrain.methods.slimclr import Similarities, SlimCLR
from pretrain.models.slim_ops import SlimMLP
from pretrain.models.spec import SubnetSpec, format_width


@register_method("slimclr-simclr")
class SlimCLRSimCLR(SlimCLR):
    """SlimCLR on SimCLR."""

    def __init__(self, encoder, method_recipe, seed: int = 0):
        super().__init__(encoder, method_recipe, seed)
        feat = encoder.num_features(SubnetSpec(encoder.widths[0]))
        self.head = SlimMLP([feat, *method_recipe.proj_dims], self.widths, bn=True, last_bn=True,
                            bias=[True, False])
        if method_recipe.head_init_std is not None:   # upstream's head is the encoder's fc, initialised with it
            normal_init_(self.head, method_recipe.head_init_std)

    def update_target(self, ctx: StepContext) -> None:
        """No momentum encoder: the log's ``momentum`` is null."""
        return None

    def compute_keys(self, view1, view2):
        return None   # the views are each other's keys

    def width_similarities(self, index, view1, view2, keys):
        self.encoder.set_subnet(SubnetSpec(self.widths[index]))
        self.head.set_width_index(index)
        name = format_width(self.widths[index])
        z = []
        for d, view in enumerate((view1, view2), start=1):
            z.append(gather_with_local_grad(F.normalize(self.head(self.encoder(view)), dim=1)))
            self.keep(f"z{d}/w{name}", z[-1])
        cosines, labels = nt_xent_similarities(z[0], z[1])   # SlimCLR.contrastive_loss: CE(cosines / T)
        return [Similarities(cosines, labels, torch.cat(z))], {}
