"""SlimCLR (MoCo v2 / v3) and DSPNet steps: slow start, distillation, queue, EMA, sampling."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from pretrain.methods.losses import byol_loss, uniformity_loss
from pretrain.methods import StepContext, build_method
from pretrain.methods.base import cosine_momentum
from pretrain.optim import LARS, LRSchedule, param_groups, set_lr
from pretrain.recipe import parse_recipe
from pretrain.models.slim_ops import frozen_bn_stats
from pretrain.models.spec import SubnetSpec
from pretrain.trainer import build_encoder

HEADS = {"slimclr-mocov2": {"queue_size": 20, "proj_dims": [32, 16]},
         "slimclr-mocov3": {"proj_dims": [32, 32, 16], "pred_dims": [32, 16]},
         "slimclr-simclr": {"proj_dims": [32, 16]},
         "dspnet-byol": {"proj_dims": [32, 16], "pred_dims": [32, 16]}}


def make(name, widths=(1.0, 0.5), **method):
    torch.manual_seed(0)
    data = {"method": {"name": name, **HEADS[name], **method},
            "model": {"arch": "slim_resnet18", "widths": list(widths), "stem": "small"},
            "data": {"dataset": "fashion-mnist"}}
    recipe = parse_recipe(data, "test")
    return build_method(recipe, build_encoder(recipe))


def views(n=6, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randn(n, 3, size, size, generator=g)


CTX = StepContext(step=0, total_steps=10, epoch=0.0, slim_active=True)


@pytest.mark.parametrize("name", ["slimclr-mocov2", "slimclr-mocov3", "slimclr-simclr"])
def test_slow_start_gives_sub_networks_no_gradient(name):
    method = make(name)
    v1, v2 = views()
    loss, terms = method(v1, v2, StepContext(0, 10, 0.0, slim_active=False))
    assert {k for k in terms if k.endswith(("/infonce", "/kd"))} == {"w1.0/infonce"}
    assert all(k.startswith("w1.0/") for k in terms)
    loss.backward()
    sub_only = method.encoder.layer1[0].bn1.bn[1]   # BN of width 0.5 only
    assert sub_only.weight.grad is None
    full_grad = method.encoder.conv1.weight.grad.clone()
    # The same step with only the full width's InfoNCE (weight 1) gives the same gradient.
    method.zero_grad()
    torch.manual_seed(0)
    ref = make(name)
    ref_loss, _ = ref(v1, v2, StepContext(0, 10, 0.0, slim_active=False))
    assert torch.allclose(ref_loss, loss)
    ref_loss.backward()
    assert torch.allclose(ref.encoder.conv1.weight.grad, full_grad)

    method.zero_grad()
    loss, terms = method(v1, v2, CTX)
    assert {"w1.0/infonce", "w0.5/infonce", "w0.5/kd"} <= set(terms)
    loss.backward()
    assert sub_only.weight.grad is not None and sub_only.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["slimclr-mocov2", "slimclr-mocov3", "slimclr-simclr"])
def test_slimclr_total_is_reweighted_distilled_sum(name):
    method = make(name, widths=(1.0, 0.75, 0.5), distill_alpha=0.3)
    loss, t = method(*views(), CTX)
    full_weight = 1 + (1.0 + 0.75 + 0.5) - 1.0
    expected = full_weight * t["w1.0/infonce"]
    for w in ("w0.75", "w0.5"):
        expected = expected + 0.7 * t[f"{w}/infonce"] + 0.3 * t[f"{w}/kd"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    off = make(name, widths=(1.0, 0.5), distill="none", loss_weights="uniform")
    loss, t = off(*views(), CTX)
    assert "w0.5/kd" not in t
    assert loss.item() == pytest.approx((t["w1.0/infonce"] + t["w0.5/infonce"]).item(), rel=1e-5)


def test_mocov2_queue_receives_full_width_keys_and_wraps():
    method = make("slimclr-mocov2")
    v1, v2 = views(n=6)
    with torch.no_grad():
        keys = F.normalize(method.key_head(method.key_encoder(v2)), dim=1)
    method(v1, v2, CTX)
    assert int(method.queue_ptr) == 6
    assert torch.allclose(method.queue[:, :6], keys.T, atol=1e-6)
    for _ in range(3):  # 6 more keys three times: 24 keys into a queue of 20 wraps around
        method(v1, v2, CTX)
    assert int(method.queue_ptr) == 24 % 20
    assert torch.allclose(method.queue[:, 18:20], keys[:2].T, atol=1e-5)
    assert torch.allclose(method.queue[:, 0:4], keys[2:].T, atol=1e-5)


def test_mocov2_logits_reference():
    method = make("slimclr-mocov2", widths=(1.0,))
    v1, v2 = views()
    queue = method.queue.clone()
    with torch.no_grad():
        k = F.normalize(method.key_head(method.key_encoder(v2)), dim=1)
        q = F.normalize(method.head(method.encoder(v1)), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue], dim=1) / 0.2
    expected = F.cross_entropy(logits, torch.zeros(6, dtype=torch.long))
    _, terms = method(v1, v2, CTX)
    assert terms["w1.0/infonce"].item() == pytest.approx(expected.item(), rel=1e-4)
    # The logged similarities, as means of upstream's logits before the temperature (moco/builder.py:
    # l_pos = einsum("nc,nc->n", q, k), l_neg = einsum("nc,ck->nk", q, queue)) and of the batch's other keys.
    cross = q @ k.T
    off_diagonal = cross[~torch.eye(6, dtype=torch.bool)]
    assert terms["w1.0/pos"].item() == pytest.approx(cross.diag().mean().item(), abs=1e-5)
    assert terms["w1.0/neg_queue"].item() == pytest.approx((q @ queue).mean().item(), abs=1e-5)
    assert terms["w1.0/neg_batch"].item() == pytest.approx(off_diagonal.mean().item(), abs=1e-5)


def test_mocov2_shuffle_bn_reference():
    """Keys come from BN batches of a shuffled batch, queries from BN batches in order (MoCo's Shuffling BN)."""
    method = make("slimclr-mocov2", widths=(1.0,), bn_groups=2)
    v1, v2 = views(n=8)
    queue = method.queue.clone()

    def grouped(encoder, head, x):
        return torch.cat([head(encoder(c)) for c in x.chunk(2)])

    g = torch.Generator()
    g.set_state(method.shuffle_generator.get_state())
    perm = torch.randperm(8, generator=g)
    with torch.no_grad():
        k = F.normalize(grouped(method.key_encoder, method.key_head, v2[perm]), dim=1)[torch.argsort(perm)]
        q = F.normalize(grouped(method.encoder, method.head, v1), dim=1)
        whole = F.normalize(method.key_head(method.key_encoder(v2)), dim=1)
    assert not torch.allclose(k, whole, atol=1e-3)   # the groups' BN statistics differ from the batch's
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue], dim=1) / 0.2
    _, terms = method(v1, v2, CTX)
    assert terms["w1.0/infonce"].item() == pytest.approx(F.cross_entropy(logits, torch.zeros(8, dtype=torch.long)).item(),
                                                         rel=1e-4)
    assert torch.allclose(method.queue[:, :8], k.T, atol=1e-5)
    with pytest.raises(ValueError, match="bn_groups=2 does not split"):
        method(*views(n=3), CTX)


def test_mocov3_symmetric_loss_reference():
    method = make("slimclr-mocov3", widths=(1.0,))
    v1, v2 = views()
    with torch.no_grad():
        k1, k2 = (F.normalize(method.key_projector(method.key_encoder(v)), dim=1) for v in (v1, v2))
        q1, q2 = (F.normalize(method.predictor(method.projector(method.encoder(v))), dim=1) for v in (v1, v2))
    labels = torch.arange(6)
    expected = (F.cross_entropy(q1 @ k2.T, labels) + F.cross_entropy(q2 @ k1.T, labels)) * 2 * 1.0
    _, terms = method(v1, v2, CTX)
    assert terms["w1.0/infonce"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_ema_update_and_momentum_schedules():
    method = make("slimclr-mocov3", momentum=0.9)
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in method.key_encoder.parameters()]
    online = [p.clone() for p in method.encoder.parameters()]
    ctx = StepContext(step=5, total_steps=10, epoch=0.0)
    m = method.update_target(ctx)
    # The EMA after step 5 is the one MoCo v3 makes before step 6, at that step's momentum.
    assert m == pytest.approx(1 - 0.5 * (1 + math.cos(math.pi * 6 / 10)) * 0.1)
    for b, o, a in zip(before, online, method.key_encoder.parameters()):
        assert torch.allclose(a, m * b + (1 - m) * o)
    assert all(not p.requires_grad for p in method.key_encoder.parameters())
    assert cosine_momentum(0.996, 0, 100) == pytest.approx(0.996)
    assert cosine_momentum(0.996, 100, 100) == pytest.approx(1.0)
    assert make("slimclr-mocov2").momentum_at(ctx) == 0.999   # MoCo v2: constant


def test_dspnet_sampled_set_has_largest_smallest_and_desired():
    desired = ["w0.5-d1.2.1.2", "w0.75-d2.2.2.2"]
    method = make("dspnet-byol", widths=(1.0, 0.75, 0.5, 0.25), depths=[[1, 1, 1, 1], [1, 2, 1, 2]],
                  desired=desired, num_random=2)
    assert method.desired() == ["w0.5-d1.2.1.2", "w0.75"]   # full depth is canonicalised
    seen = set()
    for _ in range(30):
        subnets = method.sample_subnets()
        assert subnets[0] == SubnetSpec(1.0)
        assert subnets[1] == SubnetSpec(0.25, (1, 1, 1, 1))
        assert set(subnets[2:4]) == {SubnetSpec.parse(d) for d in method.desired()}
        assert len(subnets) == len(set(subnets)) == 6
        assert all(s in method.grid for s in subnets)
        seen.update(subnets[4:])
    assert len(seen) > 4   # the random members vary from step to step


def test_dspnet_sampling_resumes_from_state_dict():
    a = make("dspnet-byol", widths=(1.0, 0.75, 0.5), depths=[[1, 1, 1, 1]], num_random=2)
    a.sample_subnets()
    state = a.state_dict()
    expected = [a.sample_subnets() for _ in range(5)]
    b = make("dspnet-byol", widths=(1.0, 0.75, 0.5), depths=[[1, 1, 1, 1]], num_random=2)
    b.load_state_dict(state)
    assert [b.sample_subnets() for _ in range(5)] == expected


def test_dspnet_loss_is_symmetric_byol_per_subnet():
    method = make("dspnet-byol", widths=(1.0, 0.5), num_random=0)
    v1, v2 = views()
    with torch.no_grad():
        z1, z2 = (method.target_projector(method.target_encoder(v)) for v in (v1, v2))
        p1, p2 = (method.predictor(method.projector(method.encoder(v))) for v in (v1, v2))
    loss, terms = method(v1, v2, CTX)
    assert set(terms) == {"w1.0/byol", "w0.5/byol"}
    expected = byol_loss(p1, z2) + byol_loss(p2, z1)
    assert terms["w1.0/byol"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert loss.item() == pytest.approx(sum(t.item() for t in terms.values()), rel=1e-5)


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_dspnet_uniformity_weight_adds_the_uniformity_of_each_prediction(weight):
    method = make("dspnet-byol", widths=(1.0, 0.5), num_random=0, uniformity_weight=weight)
    v1, v2 = views()
    with torch.no_grad():
        method.encoder.set_subnet(SubnetSpec(0.5))
        method.projector.set_width_index(1)
        method.predictor.set_width_index(1)
        p1, p2 = (method.predictor(method.projector(method.encoder(v))) for v in (v1, v2))
        method.encoder.set_subnet(SubnetSpec(1.0))
    loss, terms = method(v1, v2, CTX)
    byol = sum(terms[f"{w}/byol"].item() for w in ("w1.0", "w0.5"))
    if weight == 0.0:
        assert set(terms) == {"w1.0/byol", "w0.5/byol"} and loss.item() == pytest.approx(byol, rel=1e-6)
        return
    assert set(terms) == {"w1.0/byol", "w0.5/byol", "w1.0/uniformity", "w0.5/uniformity"}
    expected = uniformity_loss(p1) + uniformity_loss(p2)
    assert terms["w0.5/uniformity"].item() == pytest.approx(expected.item(), rel=1e-4)
    spread = terms["w1.0/uniformity"].item() + terms["w0.5/uniformity"].item()
    assert spread < 0 and loss.item() == pytest.approx(byol + weight * spread, rel=1e-5)


def test_dspnet_running_statistics_are_those_of_full_depth_networks():
    method = make("dspnet-byol", widths=(1.0, 0.5), depths=[[1, 1, 1, 1]],
                  desired=["w1.0-d1.1.1.1"], num_random=0)
    reference = copy.deepcopy(method.encoder)
    v1, v2 = views()
    method.train()
    method(v1, v2, CTX)   # w1.0, w0.5-d1.1.1.1 (smallest), w1.0-d1.1.1.1 (desired)
    reference.train().set_subnet(SubnetSpec(1.0))
    with torch.no_grad():
        reference(v1), reference(v2)   # only the full-depth w1.0 passes
    for (name, got), want in zip(method.encoder.state_dict().items(), reference.state_dict().values()):
        if name.endswith(("running_mean", "running_var")):
            assert torch.equal(got, want), name


def test_frozen_bn_stats_keeps_running_averages_and_batch_normalises():
    bn = torch.nn.BatchNorm1d(4).train()
    x = torch.randn(8, 4) * 3 + 2
    with frozen_bn_stats(bn):
        y = bn(x)
    assert torch.equal(bn.running_mean, torch.zeros(4)) and torch.equal(bn.running_var, torch.ones(4))
    assert bn.momentum == 0.1
    assert torch.allclose(y.mean(0), torch.zeros(4), atol=1e-5)   # batch statistics still normalise


def test_weight_decay_exclusion_and_lars_trust_ratio():
    layer = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    groups = param_groups(layer, 0.1, exclude_bn_bias=True)
    assert [len(g["params"]) for g in groups] == [1, 3]
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["lars_adapt"] is False
    assert len(param_groups(layer, 0.1, exclude_bn_bias=False)) == 1
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
    w.grad = torch.tensor([[1.0, 0.0]])
    opt = LARS([{"params": [w], "weight_decay": 0.5, "lars_adapt": True}], lr=0.1, momentum=0.9,
               trust_coefficient=0.01)
    opt.step()
    update = torch.tensor([[1.0 + 1.5, 2.0]])
    ratio = 0.01 * 5.0 / update.norm()
    assert torch.allclose(w.detach(), torch.tensor([[3.0, 4.0]]) - 0.1 * ratio * update)


@pytest.mark.parametrize("name", list(HEADS))
def test_recipe_names_the_trainable_modules_of_each_method(name):
    method = make(name)
    trainable = {n for n, m in method.named_children() if any(p.requires_grad for p in m.parameters())}
    assert trainable == set(method.cfg.modules)


def test_lr_scale_multiplies_the_scheduled_lr_of_one_module():
    method = make("dspnet-byol")
    groups = param_groups(method, 1e-4, exclude_bn_bias=True, lr_scale={"predictor": 10.0})
    optimizer = torch.optim.SGD(groups, lr=0.1)
    set_lr(optimizer, 0.05)
    predictor = {id(p) for p in method.predictor.parameters()}
    for group in optimizer.param_groups:
        in_predictor = {id(p) in predictor for p in group["params"]}
        assert len(in_predictor) == 1                       # a group never mixes modules of different lr
        assert group["lr"] == pytest.approx(0.5 if in_predictor.pop() else 0.05)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in method.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="no module 'head'"):
        param_groups(method, 1e-4, exclude_bn_bias=True, lr_scale={"head": 10.0})


def test_lr_schedule_warmup_cosine_and_slim_start_replacement():
    s = LRSchedule(peak=1.0, total_steps=110, warmup_steps=10, floor=0.0)
    assert s(0) == 0.0 and s(5) == pytest.approx(0.5) and s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.5) and s(110) == pytest.approx(0.0)
    # slim_start_lr replaces the base lr; the cosine keeps its place (half-way: half the new base).
    r = LRSchedule(peak=1.0, total_steps=110, warmup_steps=10, replace_step=60, replace_lr=0.8)
    assert r(59) == s(59) and r(60) == pytest.approx(0.4) and r(85) == pytest.approx(0.8 * s(85))
    floor = LRSchedule(peak=1.0, total_steps=110, warmup_steps=10, floor=1e-3)
    assert floor(0) == 1e-3 and floor(110) == 1e-3 and floor(5) == pytest.approx(1e-3 + 0.5 * (1 - 1e-3))


@pytest.mark.parametrize("last_bn", [False, True])
def test_dspnet_projection_last_bn_standardises_every_width(last_bn):
    method = make("dspnet-byol", widths=(1.0, 0.5), num_random=0, proj_last_bn=last_bn).train()
    v1, _ = views(n=8)
    for index, width in enumerate((1.0, 0.5)):
        method.encoder.set_subnet(SubnetSpec(width))
        method.projector.set_width_index(index)
        z = method.projector(method.encoder(v1)).detach()
        standardised = torch.allclose(z.mean(0), torch.zeros(16), atol=1e-5) and \
            torch.allclose(z.var(0, unbiased=False), torch.ones(16), atol=1e-2)
        assert standardised == last_bn, width
    norms = [m for m in method.projector.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert (not norms[-1].affine) == last_bn   # the standardised projection has no learned scale or shift


def test_mocov2_diagnose_names_a_network_that_tells_no_images_apart():
    method = make("slimclr-mocov2")
    logged = {"w1.0/pos": 0.80, "w1.0/neg_batch": 0.50, "w1.0/neg_queue": 0.44,      # discriminates
              "w0.5/pos": 0.913, "w0.5/neg_batch": 0.912, "w0.5/neg_queue": 0.86}   # the demo's w0.25 alone
    [found] = method.diagnose(logged)
    assert found["subnet"] == "w0.5" and found["message"] == ("tells no two images apart (cosine to positive 0.913, "
                                                              "other fresh keys 0.912, queue 0.860)")
    assert method.diagnose({}) == []                   # before anything was logged
    assert make("slimclr-mocov3").diagnose(logged) == []
