"""One SlimCLR training step over all widths vs the extracted plain networks' steps, same batch.

Both sides run the same work per width: query forward (encoder + MLP head), InfoNCE against the
same full-width keys and queue, backward, and an SGD step. The slimmable side is one SlimCLR
step over every width (sub-networks also distil from the full width, as SlimCLR does); the plain
side is the sum of one step of each extracted ``PlainResNet`` with a plain head. Key-encoder
forwards are left out of both (one shared full-width forward for SlimCLR; one per width if the
plain networks were trained separately), so the ratio measures the cost of slimmable layers.
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrain.methods.losses import info_nce, soft_cross_entropy, width_loss_weights
from pretrain.models.resnet import SlimResNet
from pretrain.checkpoints.extract import extract
from pretrain.models.slim_ops import SlimMLP, channels
from pretrain.models.spec import SubnetSpec



def median_time(fn, repeats: int, warmup: int = 1, clock=time.perf_counter) -> float:
    """Median duration of ``fn()`` on ``clock`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def run(batch: int = 32, resolution: int = 32, widths=(1.0, 0.75, 0.5, 0.25), queue: int = 4096,
        repeats: int = 5) -> dict:
    """Print and return the ratio (slimmable step) / (sum of plain steps)."""
    torch.manual_seed(0)
    widths = list(widths)
    encoder = SlimResNet(18, widths=widths, stem="small")
    feat = encoder.num_features(SubnetSpec(widths[0]))
    head = SlimMLP([feat, feat, 128], widths, bn=False)
    x = torch.randn(batch, 3, resolution, resolution)
    keys = F.normalize(torch.randn(batch, 128), dim=1)
    negatives = F.normalize(torch.randn(128, queue), dim=0)
    labels = torch.zeros(batch, dtype=torch.long)
    weights = width_loss_weights(widths)

    def logits(q):
        q = F.normalize(q, dim=1)
        return torch.cat([(q * keys).sum(1, keepdim=True), q @ negatives], dim=1) / 0.2

    slim_params = list(encoder.parameters()) + list(head.parameters())
    slim_opt = torch.optim.SGD(slim_params, lr=1e-3, momentum=0.9)

    def slim_step():
        total, teacher = 0.0, None
        for i, w in enumerate(widths):
            encoder.set_subnet(SubnetSpec(w))
            head.set_width_index(i)
            out = logits(head(encoder(x)))
            loss = info_nce(out, labels)
            if teacher is None:
                teacher = out.detach()
            else:
                loss = 0.5 * loss + 0.5 * soft_cross_entropy(out, teacher, 5.0, 5.0)
            total = total + weights[w] * loss
        slim_opt.zero_grad(set_to_none=True)
        total.backward()
        slim_opt.step()

    plains = []
    for w in widths:
        net = extract(encoder, SubnetSpec(w)).train()
        c_in, c_hid = net.num_features, channels(feat, w)   # SlimMLP's hidden size at width w
        plain_head = nn.Sequential(nn.Linear(c_in, c_hid), nn.ReLU(inplace=True), nn.Linear(c_hid, 128))
        opt = torch.optim.SGD(list(net.parameters()) + list(plain_head.parameters()), lr=1e-3, momentum=0.9)
        plains.append((net, plain_head, opt))

    def plain_steps():
        for net, plain_head, opt in plains:
            loss = info_nce(logits(plain_head(net(x))), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    results = {}
    # Wall time, and CPU time of this process, which other processes on a shared machine do not inflate.
    for clock_name, clock in (("wall", time.perf_counter), ("cpu", time.process_time)):
        t_slim, t_plain = [], []
        for _ in range(3):  # interleave, so load from other processes hits both sides alike
            t_slim.append(median_time(slim_step, repeats, warmup=1, clock=clock))
            t_plain.append(median_time(plain_steps, repeats, warmup=1, clock=clock))
        slim, plain = sorted(t_slim)[1], sorted(t_plain)[1]
        results[f"slim_step/plain_steps ({clock_name})"] = slim / plain
        print(f"SlimCLR step over widths {widths} / sum of extracted plain steps ({clock_name} time): "
              f"{slim / plain:.3f} ({slim * 1e3:.0f} ms / {plain * 1e3:.0f} ms; batch {batch}, {resolution}px, "
              f"slim_resnet18 small stem, {torch.get_num_threads()} threads; target <= 1.15)", flush=True)
    return results
