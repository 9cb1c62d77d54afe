import pytest
import torch

from pretrain.models.complexity import complexity_table
from pretrain.models.resnet import ARCHS, SlimResNet, plan_resnet
from pretrain.models.slim_ops import SlimMLP


def test_bottleneck_channel_rule():
    # SlimCLR: a bottleneck's output is int(4*planes*w), its inner width that output // 4.
    plan = plan_resnet(50, 0.75)
    assert plan.stem_channels == 48
    assert plan.stage_channels == (192, 384, 768, 1536)
    assert [s[0].inner for s in plan.stages] == [48, 96, 192, 384]
    odd = plan_resnet(50, 0.3)
    assert odd.stages[0][0].out_channels == int(256 * 0.3)
    assert odd.stages[0][0].inner == int(256 * 0.3) // 4


def test_basic_block_channels_and_strides():
    plan = plan_resnet(18, 0.5, stem="small")
    assert plan.stage_channels == (32, 64, 128, 256)
    assert plan.stage_strides == (1, 2, 4, 8)
    assert plan_resnet(18, 0.5).stage_strides == (4, 8, 16, 32)


def test_complexity_matches_published_table():
    """S-ResNet-50 at 224x224 with a 1000-way FC (SlimCLR Table): GMACs and M params within 1%."""
    expected = {"w1.0": (4.09, 25.56), "w0.75": (2.32, 14.77), "w0.5": (1.05, 6.92), "w0.25": (0.28, 1.99)}
    model = SlimResNet(50, num_classes=1000)
    for spec, c in complexity_table(model, list(expected), 224):
        gmacs, mparams = expected[str(spec)]
        assert c.macs / 1e9 == pytest.approx(gmacs, rel=0.01)
        assert c.params / 1e6 == pytest.approx(mparams, rel=0.01)


@pytest.mark.parametrize("depth", sorted(ARCHS))
def test_every_depth_runs_every_width_forward_and_backward(depth):
    model = SlimResNet(depth, widths=[1.0, 0.5], stem="small", num_classes=5)
    x = torch.randn(2, 3, 16, 16)
    for spec in model.subnets([(1, 1, 1, 1)]):
        model.set_subnet(spec)
        out = model(x)
        assert out.shape == (2, 5)
        out.sum().backward()
    assert model.conv1.weight.grad is not None


def test_features_have_the_width_channel_count(slim_r18):
    x = torch.randn(2, 3, 16, 16)
    for w, c in [(1.0, 512), (0.75, 384), (0.5, 256), (0.25, 128)]:
        slim_r18.set_subnet(f"w{w}")
        assert slim_r18(x).shape == (2, c) and slim_r18.num_features() == c


def test_switchable_bn_private_per_width(slim_r18):
    """Training one width must not touch another width's BN statistics."""
    before = slim_r18.bn1.bn[0].running_mean.clone()
    slim_r18.train().set_subnet("w0.5")
    slim_r18(torch.randn(4, 3, 16, 16))
    assert torch.equal(slim_r18.bn1.bn[0].running_mean, before)
    assert not torch.equal(slim_r18.bn1.bn[2].running_mean[:1], torch.zeros(1))


def test_zero_init_residual():
    model = SlimResNet(50, widths=[1.0, 0.5], zero_init_residual=True)
    assert all(bn.weight.detach().abs().sum().item() == 0 for layer in model.stages() for b in layer for bn in b.bn3.bn)


def test_bad_width_lists_rejected():
    with pytest.raises(ValueError, match="descending"):
        SlimResNet(18, widths=[0.5, 1.0])
    with pytest.raises(ValueError, match="depth"):
        SlimResNet(19)


def test_slim_mlp_hidden_scales_output_fixed():
    head = SlimMLP([64, 128, 32], widths=[1.0, 0.5])
    head.set_width_index(1)
    out = head(torch.randn(4, 32))  # input follows the width-0.5 backbone
    assert out.shape == (4, 32)
    assert head.layers[0].active_out == 64
