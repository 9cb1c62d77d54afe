"""Parity with upstream SlimCLR (mzhaoshuai/SlimCLR) and MoCo v3 (facebookresearch/moco-v3).

Every reference here is written out in the test from upstream's formulas, never by calling the
SlimBench function under test:

- ``models/s_moco.py`` (``ssl_loss``, ``InfoNCE``): InfoNCE returns the logits *without* the
  temperature; the loss is ``CE(logits / T)``; sub-network ``w``'s loss is
  ``weight_w * ((1 - a) * CE_w + a * KD(logits_w, logits_max))``; the full width's ``weight_0 * CE``.
- ``models/s_mocov3.py`` (``contrastive_loss``): logits are ``q k^T / T`` (these are distilled),
  the loss ``CE * 2T``; ``ssl_loss`` runs for (q1, k2) and (q2, k1) and the two are summed.
- ``models/distiller/KD.py`` (``kd_distill_loss_v2``): ``-sum softmax(t / T_t) log_softmax(s / T_s)``,
  batch mean, times ``T_s ** 2``.
- ``models/utils.py`` (``loss_weights_generate``, mode 5): the full width ``1 + sum(w) - max(w)``, others 1.
- ``utils/lr_scheduler.py`` and ``main_ssl.py``: warm-up over ``warmup_proportion * all_iters``
  steps from 1e-8, cosine of the *same* global step afterwards, ``init_lr`` replaced by
  ``slim_start_lr`` from epoch ``slim_start_epoch`` on, floor 1e-8.
- ``models/backbones/s_resnet.py`` (``mocov3_slim``) and moco-v3 ``moco/builder.py``
  (``MoCo_ResNet``): the ResNet projector and predictor.
"""
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrain.methods import StepContext, build_method
from pretrain.recipe import load_recipe, parse_recipe
from pretrain.models.slim_ops import SlimLinear
from pretrain.trainer import build_encoder, lr_schedule

RECIPES = Path(__file__).resolve().parents[3] / "configs" / "pretrain"
WIDTHS = (1.0, 0.5, 0.25)
CTX = StepContext(step=0, total_steps=10, epoch=0.0, slim_active=True)


# -- upstream's formulas, written out ------------------------------------------------------------
def upstream_loss_weights(widths):
    """``loss_weights_generate(5, widths)``."""
    top = max(widths)
    return [1.0 + sum(widths) - top if w == top else 1.0 for w in widths]


def upstream_kd(student, teacher, t_stu, t_tea):
    """``kd_distill_loss_v2``."""
    log_p = torch.log_softmax(student.double() / t_stu, dim=1)
    target = torch.softmax(teacher.double() / t_tea, dim=1)
    return -(target * log_p).sum(dim=1).mean() * t_stu * t_stu


def upstream_ssl_loss(logits_of, ce_of, widths, alpha, t_stu, t_tea):
    """``ssl_loss`` of s_moco / s_mocov3 (slim enabled, SEED-style KD, not full_distill).

    ``logits_of[w]`` are the logits InfoNCE / contrastive_loss return, ``ce_of[w]`` its loss.
    Returns (total, {w: CE}, {w: KD}).
    """
    weights = upstream_loss_weights(widths)
    teacher = logits_of[widths[0]]
    total = weights[0] * ce_of[widths[0]]
    kd = {}
    for i, w in enumerate(widths[1:], start=1):
        kd[w] = upstream_kd(logits_of[w], teacher, t_stu, t_tea)
        total = total + weights[i] * ((1 - alpha) * ce_of[w] + alpha * kd[w])
    return total, kd


def make(name, **method):
    torch.manual_seed(0)
    heads = {"slimclr-mocov2": {"queue_size": 24, "proj_dims": [32, 16]},
             "slimclr-mocov3": {"proj_dims": [32, 16], "pred_dims": [32, 16]}}[name]
    data = {"method": {"name": name, **heads, **method},
            "model": {"arch": "slim_resnet18", "widths": list(WIDTHS), "stem": "small"},
            "data": {"dataset": "fashion-mnist"}}
    recipe = parse_recipe(data, "test")
    m = build_method(recipe, build_encoder(recipe))
    m.recorded = {}
    return m


def views(n=8, size=8):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, size, size, generator=g), torch.randn(n, 3, size, size, generator=g)


def name(w):
    return f"w{w:g}" if w != 1 else "w1.0"


# -- the steps -----------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature, t_distill", [(0.2, 5.0), (0.07, 2.0)])
def test_slimclr_mocov2_step_matches_upstream(temperature, t_distill):
    method = make("slimclr-mocov2", temperature=temperature, teacher_temp=t_distill, student_temp=t_distill,
                  distill_alpha=0.5, loss_weights="slimclr", shuffle_bn=False)
    loss, terms = method(*views(), CTX)
    rec = {k: v.double() for k, v in method.recorded.items()}
    k, queue = rec["k"], rec["queue"]
    labels = torch.zeros(k.shape[0], dtype=torch.long)
    logits, ce = {}, {}
    for w in WIDTHS:
        q = rec[f"q/{name(w)}"]
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", q, queue)
        logits[w] = torch.cat([l_pos, l_neg], dim=1)          # InfoNCE returns them without T
        ce[w] = F.cross_entropy(logits[w] / temperature, labels)
    total, kd = upstream_ssl_loss(logits, ce, WIDTHS, 0.5, t_distill, t_distill)
    for w in WIDTHS:
        assert terms[f"{name(w)}/infonce"].item() == pytest.approx(ce[w].item(), rel=1e-5)
    for w in WIDTHS[1:]:
        assert terms[f"{name(w)}/kd"].item() == pytest.approx(kd[w].item(), rel=1e-5)
    assert loss.item() == pytest.approx(total.item(), rel=1e-5)


@pytest.mark.parametrize("temperature, t_stu, t_tea", [(1.0, 1.0, 1.0), (0.7, 3.0, 2.0)])
def test_slimclr_mocov3_step_matches_upstream(temperature, t_stu, t_tea):
    method = make("slimclr-mocov3", temperature=temperature, teacher_temp=t_tea, student_temp=t_stu,
                  distill_alpha=0.5, loss_weights="slimclr")
    loss, terms = method(*views(), CTX)
    rec = {k: v.double() for k, v in method.recorded.items()}
    n = rec["k1"].shape[0]
    labels = torch.arange(n)                          # one process: rank 0's offset is 0
    total = 0.0
    ce_sum = {w: 0.0 for w in WIDTHS}
    kd_sum = {w: 0.0 for w in WIDTHS[1:]}
    for q_key, k in (("q1", rec["k2"]), ("q2", rec["k1"])):   # ssl_loss(q1, k2) + ssl_loss(q2, k1)
        logits, ce = {}, {}
        for w in WIDTHS:
            logits[w] = torch.einsum("nc,mc->nm", rec[f"{q_key}/{name(w)}"], k) / temperature
            ce[w] = F.cross_entropy(logits[w], labels) * (2 * temperature)
            ce_sum[w] = ce_sum[w] + ce[w]
        part, kd = upstream_ssl_loss(logits, ce, WIDTHS, 0.5, t_stu, t_tea)
        total = total + part
        for w in WIDTHS[1:]:
            kd_sum[w] = kd_sum[w] + kd[w]
    for w in WIDTHS:
        assert terms[f"{name(w)}/infonce"].item() == pytest.approx(float(ce_sum[w]), rel=1e-5)
    for w in WIDTHS[1:]:
        assert terms[f"{name(w)}/kd"].item() == pytest.approx(float(kd_sum[w]), rel=1e-5)
    assert loss.item() == pytest.approx(float(total), rel=1e-5)


# -- the learning rate ---------------------------------------------------------------------------
def upstream_lr(step, epoch, init_lr, all_iters, warmup_proportion, slim_start_epoch, slim_start_lr):
    """``lr_scheduler('cos')`` as ``main_ssl.py`` drives it (T = global_step before the step)."""
    if slim_start_epoch > 0 and epoch >= slim_start_epoch:   # main_ssl.py: scheduler.init_lr = slim_start_lr
        init_lr = slim_start_lr
    slow_start_iters, slow_start_lr, end_lr = warmup_proportion * all_iters, 1e-8, 1e-8
    if slow_start_iters > 0 and step <= slow_start_iters:
        lr = min(1.0 * step / slow_start_iters * (init_lr - slow_start_lr) + slow_start_lr, init_lr)
    else:
        lr = 0.5 * init_lr * (1.0 + math.cos(1.0 * (step - slow_start_iters) / (all_iters - slow_start_iters) * math.pi))
    return max(lr, end_lr)


# scripts/mocov2.sh case 01 (slim_start_lr not passed: params.py's default 1e-4) and mocov3.sh case 01.
SCHEDULES = [("slimclr-mocov2-r50-200ep", dict(init_lr=0.2, epochs=200, warmup_proportion=0.05,
                                               slim_start_epoch=100, slim_start_lr=1e-4)),
             ("slimclr-mocov2-r50-800ep", dict(init_lr=0.2, epochs=800, warmup_proportion=0.0125,
                                               slim_start_epoch=400, slim_start_lr=1e-4)),
             ("slimclr-mocov3-r50-300ep", dict(init_lr=1.2, epochs=300, warmup_proportion=0.033,
                                               slim_start_epoch=150, slim_start_lr=3.2))]


@pytest.mark.parametrize("stem, up", SCHEDULES, ids=[s for s, _ in SCHEDULES])
def test_lr_at_every_epoch_matches_upstream_scheduler(stem, up):
    steps_per_epoch = 1281167 // 1024                     # ImageNet at the scripts' global batch 1024
    recipe = load_recipe(RECIPES / f"{stem}.yaml")
    assert recipe.data.batch_size == 1024 and recipe.run.epochs == up["epochs"]
    schedule = lr_schedule(recipe, steps_per_epoch)
    all_iters = up["epochs"] * steps_per_epoch
    checked = 0
    for epoch in range(up["epochs"]):
        # the first step of every epoch, its middle, and the steps around the warm-up's end
        for step in {epoch * steps_per_epoch, epoch * steps_per_epoch + steps_per_epoch // 2}:
            ref = upstream_lr(step, epoch, up["init_lr"], all_iters, up["warmup_proportion"],
                              up["slim_start_epoch"], up["slim_start_lr"])
            assert schedule(step) == pytest.approx(ref, rel=1e-9, abs=1e-12), (epoch, step)
            checked += 1
    warm_end = int(up["warmup_proportion"] * all_iters)
    for step in range(max(warm_end - 2, 0), warm_end + 3):
        ref = upstream_lr(step, step // steps_per_epoch, up["init_lr"], all_iters, up["warmup_proportion"],
                          up["slim_start_epoch"], up["slim_start_lr"])
        assert schedule(step) == pytest.approx(ref, rel=1e-9, abs=1e-12), step
    assert checked == 2 * up["epochs"]


# -- MoCo v3's ResNet heads ----------------------------------------------------------------------
def head_layers(mlp: nn.Module, index: int, in_features: int):
    """(kind, in, out, bias, affine) of each layer the head runs at width ``index``, and its parameter count."""
    layers = []

    def linear_hook(m, inputs, out):
        layers.append(("linear", inputs[0].shape[-1], out.shape[-1], m.bias is not None))

    def bn_hook(m, inputs, out):   # only the active width's BN runs
        layers.append(("bn", m.num_features, m.affine))

    hooks = [m.register_forward_hook(linear_hook) for m in mlp.modules() if isinstance(m, SlimLinear)]
    hooks += [m.register_forward_hook(bn_hook) for m in mlp.modules() if isinstance(m, nn.BatchNorm1d)]
    mlp.set_width_index(index)
    mlp.eval()
    with torch.no_grad():
        mlp(torch.zeros(2, in_features))
    for h in hooks:
        h.remove()
    count = sum(i * o + (o if b else 0) if kind == "linear" else 0
                for kind, i, o, b in (layer for layer in layers if layer[0] == "linear"))
    count += sum(2 * c if affine else 0 for kind, c, affine in (layer for layer in layers if layer[0] == "bn"))
    return layers, count


@pytest.mark.parametrize("index, width", [(0, 1.0), (3, 0.25)])
def test_mocov3_resnet_heads_are_upstreams(index, width):
    recipe = load_recipe(RECIPES / "slimclr-mocov3-r50-300ep.yaml")
    method = build_method(recipe, build_encoder(recipe))
    feat, hidden, dim = int(2048 * width), int(4096 * width), 256
    # s_resnet.py mocov3_slim / MoCo_ResNet: Linear(no bias) BN ReLU Linear(no bias) BN(affine=False)
    proj_expected = [("linear", feat, hidden, False), ("bn", hidden, True), ("linear", hidden, dim, False),
                     ("bn", dim, False)]
    # s_mocov3.py _build_slimmable_mlp(2, dim, mlp_dim, dim, last_bn=False)
    pred_expected = [("linear", dim, hidden, False), ("bn", hidden, True), ("linear", hidden, dim, False)]
    proj, proj_count = head_layers(method.projector, index, feat)
    pred, pred_count = head_layers(method.predictor, index, dim)
    assert proj == proj_expected
    assert pred == pred_expected
    assert proj_count == feat * hidden + 2 * hidden + hidden * dim
    assert pred_count == dim * hidden + 2 * hidden + hidden * dim
    if width == 1.0:   # MoCo v3's own ResNet-50 heads: 9.45M and 2.11M parameters
        assert (proj_count, pred_count) == (9_445_376, 2_105_344)
