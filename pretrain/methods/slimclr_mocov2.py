"""SlimCLR-MoCo v2: slimmable query encoder and MLP head, full-width momentum key encoder, a queue.

Per step (on top of ``SlimCLR``'s loop over widths)::

    k         = normalize(key_head(key_encoder(shuffle(view2))))  # full width, no gradient; unshuffled
    q_w       = normalize(head_w(encoder_w(view1)))
    s_w       = [q_w . k, q_w . queue]                            # positive at index 0; InfoNCE(s_w / T)
    enqueue(all_gather(k))                                        # keys of every rank
    key_encoder, key_head <- m * key + (1 - m) * query            # after the optimizer step

Shuffling BN (MoCo, section 3.3): BatchNorm statistics of a batch carry a signature that lets a
query find its positive key computed in "the same" batch, a shortcut that lowers the loss and
hurts the features. MoCo computes keys on a batch shuffled across GPUs. ``bn_groups`` splits each
rank's batch into that many BN batches (as on that many GPUs), so the shuffle works on one process.

A queue has a second shortcut: its keys come from older key encoders. When the encoder drifts fast
against the key momentum, the current query is closer to every current key than to any queued one,
and InfoNCE falls with no instance discrimination at all. Each width therefore logs, beside its
loss, the mean cosine of a query with its positive key (``pos``), with the queue (``neg_queue``) and
with the other keys of its batch (``neg_batch``, fresh negatives the loss does not use):
``neg_batch`` near ``pos`` with ``neg_queue`` far below both is that shortcut.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrain.distributed import batch_shuffle, batch_unshuffle, concat_all_gather, world_size
from pretrain.models.slim_ops import SlimMLP
from pretrain.models.spec import SubnetSpec, format_width
from pretrain.methods.base import frozen_copy, normal_init_, register_method
from pretrain.methods.slimclr import Similarities, SlimCLR


# pos - neg_batch below this (in cosine) counts as no instance discrimination. A trained MoCo keeps
# tenths between them; random init of a narrow ResNet already has 0.003 (every output in one direction).
DISCRIMINATION_MARGIN = 0.01


def _mean_off_diagonal_cosine(q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Mean of ``q_i . k_j`` over ``i != j`` from sums: no matmul, so no counted FLOPs (``_grouped`` ensures n >= 2)."""
    n = q.shape[0]
    return ((q.sum(0) * k.sum(0)).sum() - pos.sum()) / (n * (n - 1))


@register_method("slimclr-mocov2")
class SlimCLRMoCoV2(SlimCLR):
    """SlimCLR on MoCo v2."""

    def __init__(self, encoder, method_recipe, seed: int = 0):
        super().__init__(encoder, method_recipe, seed)
        feat = encoder.num_features(SubnetSpec(encoder.widths[0]))
        # MoCo v2's head: Linear-ReLU-Linear, no BN; the hidden layer slims with the width.
        self.head = SlimMLP([feat, *method_recipe.proj_dims], self.widths, bn=False)
        if method_recipe.head_init_std is not None:   # upstream's head is the encoder's fc, initialised with it
            normal_init_(self.head, method_recipe.head_init_std)
        self.key_encoder = frozen_copy(encoder)
        self.key_head = frozen_copy(self.head)
        dim = method_recipe.proj_dims[-1]
        self.register_buffer("queue", F.normalize(torch.randn(dim, method_recipe.queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        # Its own generator (saved with the state dict): a resumed run shuffles exactly as an uninterrupted one.
        self.shuffle_generator = torch.Generator().manual_seed(seed)

    def online_and_target(self):
        return [(self.encoder, self.key_encoder), (self.head, self.key_head)]

    def _grouped(self, encoder, head, x):
        """``head(encoder(x))`` with BatchNorm statistics per group of ``bn_groups`` (equal chunks of ``x``)."""
        groups = self.cfg.bn_groups
        if x.shape[0] % groups or x.shape[0] < 2 * groups:
            raise ValueError(f"method.bn_groups={groups} does not split this rank's batch of {x.shape[0]} "
                             f"images into BN batches of at least 2")
        if groups == 1:
            return head(encoder(x))
        return torch.cat([head(encoder(chunk)) for chunk in x.chunk(groups)])

    @torch.no_grad()
    def compute_keys(self, view1, view2):
        self.key_head.set_width_index(0)
        # One BN batch in one process: a permutation cannot change its statistics, so skip it.
        if self.cfg.shuffle_bn and world_size() * self.cfg.bn_groups > 1:
            shuffled, unshuffle = batch_shuffle(view2, self.shuffle_generator)
            k = batch_unshuffle(self._grouped(self.key_encoder, self.key_head, shuffled), unshuffle)
        else:
            k = self._grouped(self.key_encoder, self.key_head, view2)
        k = F.normalize(k, dim=1)
        self.keep("k", k)
        self.keep("queue", self.queue)
        # Clone the queue: it is updated in place after the logits that use it are built.
        return k, self.queue.clone()

    def width_similarities(self, index, view1, view2, keys):
        k, queue = keys
        self.encoder.set_subnet(SubnetSpec(self.widths[index]))
        self.head.set_width_index(index)
        q = F.normalize(self._grouped(self.encoder, self.head, view1), dim=1)
        self.keep(f"q/w{format_width(self.widths[index])}", q)
        pos = (q * k).sum(dim=1, keepdim=True)
        neg = q @ queue.to(q.dtype)
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        diagnostics = {"pos": pos.detach().mean(), "neg_queue": neg.detach().mean(),
                       "neg_batch": _mean_off_diagonal_cosine(q.detach(), k, pos.detach())}
        return [Similarities(torch.cat([pos, neg], dim=1), labels, q)], diagnostics

    def diagnose(self, logged):
        found = []
        for width in self.widths:
            name = f"w{format_width(width)}"
            pos, fresh, queued = (logged.get(f"{name}/{t}") for t in ("pos", "neg_batch", "neg_queue"))
            if pos is not None and fresh is not None and pos - fresh < DISCRIMINATION_MARGIN:
                found.append({"subnet": name, "message": f"tells no two images apart (cosine to positive {pos:.3f}, "
                                                         f"other fresh keys {fresh:.3f}, queue {queued:.3f})"})
        return found

    @torch.no_grad()
    def after_keys(self, keys) -> None:
        k = concat_all_gather(keys[0]).to(self.queue.dtype)
        size = self.queue.shape[1]
        idx = (self.queue_ptr + torch.arange(k.shape[0], device=k.device)) % size
        self.queue[:, idx] = k.T
        self.queue_ptr.copy_((self.queue_ptr + k.shape[0]) % size)

    def get_extra_state(self):
        return {"shuffle_generator": self.shuffle_generator.get_state()}

    def set_extra_state(self, state) -> None:
        self.shuffle_generator.set_state(state["shuffle_generator"])
