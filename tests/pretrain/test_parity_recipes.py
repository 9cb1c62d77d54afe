"""The shipped ResNet-50 recipes against the published values, compared with what SlimBench builds from them.

Each published value is written out here with its source; the SlimBench side is what the trainer
builds from the resolved recipe (the two-view transforms, the lr schedule, the optimizer, the method's
EMA momentum and the networks it samples), never the YAML text.

Sources:
- SlimCLR (mzhaoshuai/SlimCLR at cc7613d): ``params.py:118`` ``--crop-min`` default 0.2, read as
  ``args.crop_min`` by ``dataset/dataloader.py:116`` and ``:128``
  (``RandomResizedCrop(224, scale=(args.crop_min, 1.))``);
  ``models/s_moco.py:214`` and ``models/s_mocov3.py:208``:
  ``max_loss = max_loss * self.loss_weights[0] if enable_slim else max_loss``.
- BYOL (google-deepmind/deepmind-research ``byol/configs/byol.py`` at 4822a45): ``_LR_PRESETS[300] = 0.3``,
  ``_WD_PRESETS[300] = 1e-6``, ``_EMA_PRESETS[300] = 0.99``, ``warmup_steps = 10 * images_per_epoch // batch``;
  ``byol/utils/schedules.py`` ``learning_schedule``: ``scaled_lr = base_learning_rate * batch_size / 256``;
  ``target_ema``: ``1 - (1 - base_ema) * 0.5 (1 + cos(pi k / K))``.
- US-Nets (JiahuiYu/slimmable_networks ``train.py``, ``universally_slimmable_training``): the sandwich rule
  trains ``[max_width, min_width] + (num_sample_training - 2)`` random widths per step, n = 4.
"""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision import transforms as T

from pretrain.data.augment import two_view_transforms
from pretrain.methods import StepContext, build_method
from pretrain.optim import build_optimizer
from pretrain.recipe import load_recipe, parse_recipe
from pretrain.models.spec import SubnetSpec
from pretrain.trainer import build_encoder, lr_schedule
from tests.pretrain.data.test_augment import UPSTREAM_SIMCLR, describe

RECIPES = Path(__file__).resolve().parents[2] / "configs" / "pretrain"

# -- published values, written out ---------------------------------------------------------------
SLIMCLR_CROP_MIN = 0.2                     # SlimCLR params.py:118 --crop-min
BYOL_300EP = {"base_lr": 0.3, "weight_decay": 1e-6, "base_ema": 0.99}   # byol/configs/byol.py presets [300]
BYOL_WARMUP_EPOCHS = 10                    # byol/configs/byol.py warmup_steps = 10 * images_per_epoch // batch
US_NETS_SAMPLES = 4                        # US-Nets' num_sample_training: largest, smallest, 2 random


def upstream_byol_lr(batch_size):
    """``schedules.learning_schedule``: the peak lr after warm-up."""
    return BYOL_300EP["base_lr"] * batch_size / 256.0


def upstream_target_ema(step, total):
    """``schedules.target_ema``."""
    return 1.0 - (1.0 - BYOL_300EP["base_ema"]) * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


# -- MoCo v3's crop ------------------------------------------------------------------------------
def test_mocov3_views_crop_from_slimclrs_crop_min():
    recipe = load_recipe(RECIPES / "slimclr-mocov3-r50-300ep.yaml")
    d = recipe.data
    for view in two_view_transforms(d.augment, d.image_size, d.crop_scale, d.blur):
        crops = [t for t in view.transforms if isinstance(t, T.RandomResizedCrop)]
        assert [c.scale for c in crops] == [(SLIMCLR_CROP_MIN, 1.0)]


# -- DSPNet-BYOL ResNet-50: BYOL's 300-epoch presets at the recipe's batch ------------------------
def recipe_and_method(name: str):
    """A shipped recipe and the method it builds (an R50: build once per module)."""
    recipe = load_recipe(RECIPES / name)
    return recipe, build_method(recipe, build_encoder(recipe))


@pytest.fixture(scope="module")
def dspnet_r50():
    return recipe_and_method("dspnet-byol-r50.yaml")


def test_dspnet_r50_lr_is_byols_300_epoch_preset_scaled_to_its_batch(dspnet_r50):
    recipe, _ = dspnet_r50
    assert recipe.run.epochs == 300
    steps_per_epoch = 1281167 // recipe.data.batch_size     # ImageNet train, as BYOL counts its steps
    schedule = lr_schedule(recipe, steps_per_epoch)
    warmup = BYOL_WARMUP_EPOCHS * steps_per_epoch
    assert schedule.warmup_steps == warmup
    assert schedule(int(warmup)) == pytest.approx(upstream_byol_lr(recipe.data.batch_size), rel=1e-12)
    assert schedule(0) == 0.0                                # BYOL warms up from 0


def test_dspnet_r50_weight_decay_and_target_ema_are_byols_300_epoch_presets(dspnet_r50):
    recipe, method = dspnet_r50
    opt = build_optimizer(method, recipe.optim)
    decays = {g["weight_decay"] for g in opt.param_groups if g["params"]}
    assert decays == {0.0, BYOL_300EP["weight_decay"]}      # BN and biases excluded, as BYOL
    total = 300 * (1281167 // recipe.data.batch_size)
    for step in (0, total // 3, total - 1):
        got = method.momentum_at(StepContext(step, total, 0.0, True))
        assert got == pytest.approx(upstream_target_ema(step, total), rel=1e-9)


def test_dspnet_r50_trains_nine_networks_per_step_by_its_own_named_rule(dspnet_r50):
    recipe, method = dspnet_r50
    assert recipe.method.sample == "sandwich-desired"
    for _ in range(3):
        nets = method.sample_subnets()
        assert len(nets) == len(set(nets)) == 9
        assert nets[:2] == [SubnetSpec(1.0), SubnetSpec(0.25, (2, 2, 2, 2))]
        assert set(method.desired_specs) <= set(nets)


def tiny_byol(**method):
    data = {"method": {"name": "dspnet-byol", "proj_dims": [16, 8], "pred_dims": [16, 8],
                       "depths": [[1, 1, 1, 1]], **method},
            "model": {"arch": "slim_resnet18", "widths": [1.0, 0.75, 0.5, 0.25], "stem": "small"},
            "data": {"dataset": "fashion-mnist"}}
    recipe = parse_recipe(data, "test")
    return build_method(recipe, build_encoder(recipe))


def test_sandwich_is_us_nets_rule_largest_smallest_and_n_minus_2_random():
    method = tiny_byol(sample="sandwich", num_random=US_NETS_SAMPLES - 2, desired=["w0.5"])
    largest, smallest = SubnetSpec(1.0), SubnetSpec(0.25, (1, 1, 1, 1))
    seen = set()
    for _ in range(20):
        nets = method.sample_subnets()
        assert len(nets) == len(set(nets)) == US_NETS_SAMPLES
        assert nets[:2] == [largest, smallest]
        seen.update(nets[2:])
    # the middle two are drawn from the grid: the desired w0.5 is not forced into every step
    assert SubnetSpec(0.5) in seen and len(seen) > 2


# -- SlimCLR: the full width's loss weight is 1 before the slow start ------------------------------
def tiny_slimclr(name):
    torch.manual_seed(0)
    heads = {"slimclr-mocov2": {"queue_size": 24, "proj_dims": [32, 16], "shuffle_bn": False},
             "slimclr-mocov3": {"proj_dims": [32, 16], "pred_dims": [32, 16]}}[name]
    data = {"method": {"name": name, "loss_weights": "slimclr", **heads},
            "model": {"arch": "slim_resnet18", "widths": [1.0, 0.5, 0.25], "stem": "small"},
            "data": {"dataset": "fashion-mnist"}}
    recipe = parse_recipe(data, "test")
    method = build_method(recipe, build_encoder(recipe))
    method.recorded = {}
    return method


def views(n=8, size=8):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, size, size, generator=g), torch.randn(n, 3, size, size, generator=g)


BEFORE_SLOW_START = StepContext(step=0, total_steps=10, epoch=0.0, slim_active=False)


def test_mocov2_full_width_weight_is_one_before_the_slow_start():
    method = tiny_slimclr("slimclr-mocov2")
    assert method.loss_weights[1.0] == pytest.approx(1 + 1.75 - 1.0)   # 1.75 after the switch
    loss, _ = method(*views(), BEFORE_SLOW_START)
    rec = {k: v.double() for k, v in method.recorded.items()}
    q, k, queue = rec["q/w1.0"], rec["k"], rec["queue"]
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue], dim=1) / method.cfg.temperature
    expected = 1.0 * F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))   # s_moco.py:214
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_mocov3_full_width_weight_is_one_before_the_slow_start():
    method = tiny_slimclr("slimclr-mocov3")
    loss, _ = method(*views(), BEFORE_SLOW_START)
    rec = {k: v.double() for k, v in method.recorded.items()}
    t = method.cfg.temperature
    labels = torch.arange(rec["k1"].shape[0])
    expected = sum(F.cross_entropy(rec[q] @ rec[k].T / t, labels) * 2 * t          # s_mocov3.py:208
                   for q, k in (("q1/w1.0", "k2"), ("q2/w1.0", "k1")))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


# -- SlimCLR-SimCLR ResNet-50: scripts/simclr.sh case 02 ------------------------------------------
# mzhaoshuai/SlimCLR scripts/simclr.sh: header (lines 16-48) and case 02 (lines 66-81); models/s_simclr.py
# s_SimCLR(dim=128, T=0.1); params.py simclr_mlp_dim 2048, slim_start_lr 1e-4 (not passed by the script);
# dataset/dataloader.py ssl_aug == 'simclr'; models/backbones/s_resnet.py simclr_slim.
SIMCLR_SH = {"lr": 2.4, "weight_decay": 1e-6, "momentum": 0.9, "num_epochs": 100, "warmup_proportion": 0.1,
             "batch": 128 * 8, "slim_start_epoch": 50, "slim_start_lr": 1e-4, "aux_loss_w": 0.5, "T_kd": 5.0,
             "width_mult_list": [1.0, 0.75, 0.5, 0.25], "T": 0.1, "mlp_dim": 2048, "dim": 128}


@pytest.fixture(scope="module")
def simclr_r50():
    return recipe_and_method("slimclr-simclr-r50-100ep.yaml")


def test_simclr_r50_schedule_is_simclr_sh_case_02(simclr_r50):
    recipe, method = simclr_r50
    steps_per_epoch = 1281167 // SIMCLR_SH["batch"]
    sched = lr_schedule(recipe, steps_per_epoch)
    total = SIMCLR_SH["num_epochs"] * steps_per_epoch
    warm = SIMCLR_SH["warmup_proportion"] * total
    assert recipe.data.batch_size == SIMCLR_SH["batch"] and sched.total_steps == total
    assert sched(int(warm)) == pytest.approx(1e-8 + int(warm) / warm * (SIMCLR_SH["lr"] - 1e-8))
    switch = math.ceil(SIMCLR_SH["slim_start_epoch"] * steps_per_epoch)
    progress = (switch - warm) / (total - warm)
    assert sched(switch - 1) > 1.0   # the base lr 2.4 until the slow start ends ...
    assert sched(switch) == pytest.approx(0.5 * SIMCLR_SH["slim_start_lr"] * (1 + math.cos(math.pi * progress)))
    optimizer = build_optimizer(method, recipe.optim)
    assert type(optimizer).__name__ == "LARS"
    for group in optimizer.param_groups:   # utils/optim.py LARS: 1-D parameters neither decay nor adapt
        one_d = all(p.ndim == 1 for p in group["params"])
        assert group["weight_decay"] == (0.0 if one_d else SIMCLR_SH["weight_decay"])
        assert group["momentum"] == SIMCLR_SH["momentum"]


def test_simclr_r50_method_and_head_are_s_simclrs(simclr_r50):
    recipe, method = simclr_r50
    cfg = method.cfg
    assert method.widths == SIMCLR_SH["width_mult_list"] and cfg.temperature == SIMCLR_SH["T"]
    assert (cfg.distill, cfg.distill_on, cfg.full_distill) == ("kd", "logits", False)
    assert (cfg.distill_alpha, cfg.teacher_temp, cfg.student_temp) == (SIMCLR_SH["aux_loss_w"], 5.0, 5.0)
    assert method.loss_weights == {1.0: 1 + sum(SIMCLR_SH["width_mult_list"]) - 1.0, 0.75: 1.0, 0.5: 1.0, 0.25: 1.0}
    linears = [m for m in method.head.modules() if isinstance(m, torch.nn.Linear)]
    norms = [m for m in method.head.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    # simclr_slim: Linear(2048w -> 2048w, bias) BN ReLU Linear(-> 128, no bias) BN, one BN per width
    assert [(m.in_features, m.out_features, m.bias is not None) for m in linears] == \
        [(2048, SIMCLR_SH["mlp_dim"], True), (SIMCLR_SH["mlp_dim"], SIMCLR_SH["dim"], False)]
    assert len(norms) == 2 * len(method.widths) and all(m.affine for m in norms)
    for index, w in enumerate(method.widths):
        method.head.set_width_index(index)
        out = method.head(torch.randn(4, int(2048 * w)))
        assert out.shape == (4, SIMCLR_SH["dim"])


def test_simclr_r50_views_are_dataloaders_simclr_list(simclr_r50):
    recipe, _ = simclr_r50
    d = recipe.data
    for view in two_view_transforms(d.augment, d.image_size, d.crop_scale, d.blur):
        assert describe(view) == UPSTREAM_SIMCLR
