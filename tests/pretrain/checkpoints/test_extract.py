import pytest
import torch
import torchvision

from pretrain.checkpoints.format import Checkpoint
from pretrain.models.resnet import SlimResNet
from pretrain.checkpoints.extract import calibrate_bn, extract
from pretrain.models.spec import SubnetError
from tests.conftest import randomize_bn

SPECS = ["w1.0", "w0.75", "w0.5", "w0.25", "w1.0-d1.1.1.1", "w0.5-d2.1.2.1"]


@pytest.mark.parametrize("spec", SPECS)
def test_extraction_equals_slimmable_network(slim_r18, spec):
    x = torch.randn(3, 3, 24, 24)
    plain = extract(slim_r18, spec)
    assert not any(type(m).__name__.startswith(("Slim", "Switchable")) for m in plain.modules())
    with torch.no_grad(), slim_r18.subnet(spec):
        expected = slim_r18(x)
        got = plain(x)
    assert (expected - got).abs().max().item() <= 1e-5


@pytest.mark.parametrize("spec", ["w0.5", "w0.25-d1.2.3.1"])
def test_bottleneck_extraction_equals(spec):
    torch.manual_seed(1)
    model = randomize_bn(SlimResNet(50, widths=[1.0, 0.5, 0.25], num_classes=10)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), model.subnet(spec):
        assert (model(x) - extract(model, spec)(x)).abs().max().item() <= 1e-5


def test_width_one_resnet50_loads_into_torchvision_strict():
    model = randomize_bn(SlimResNet(50, widths=[1.0, 0.5], num_classes=1000)).eval()
    plain = extract(model, "w1.0")
    tv = torchvision.models.resnet50()
    tv.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (tv.eval()(x) - plain(x)).abs().max().item() <= 1e-5


def test_output_shape_declares_channels_and_strides(slim_r18):
    plain = extract(slim_r18, "w0.5")
    feats = plain.forward_stages(torch.randn(1, 3, 32, 32))
    for name, (c, stride) in plain.output_shape().items():
        assert feats[name].shape[1] == c
        assert 32 // feats[name].shape[-1] == stride


def test_unlisted_width_needs_calibration(slim_r18):
    with pytest.raises(SubnetError, match="calib"):
        extract(slim_r18, "w0.6")


def test_unlisted_width_calibrated_bn_matches_data_statistics(slim_r18):
    torch.manual_seed(0)
    batches = [torch.randn(8, 3, 16, 16) * 2 + 1 for _ in range(4)]
    plain = extract(slim_r18, "w0.6", calib_loader=[(b, 0) for b in batches], calib_batches=4)
    assert plain.bn1.num_features == int(64 * 0.6)
    # cumulative average over the batches equals the statistics of the stem over all of them
    with torch.no_grad():
        stem = torch.cat([plain.conv1(b) for b in batches])
    expected = stem.mean(dim=(0, 2, 3))
    assert torch.allclose(plain.bn1.running_mean, expected, atol=1e-4)
    assert plain.bn1.num_batches_tracked.item() == 4
    # affine parameters come from the nearest larger listed width (0.75)
    assert torch.equal(plain.bn1.weight, slim_r18.bn1.bn[1].weight[: plain.bn1.num_features])


def test_shallower_network_is_calibrated_when_data_is_given(slim_r18):
    torch.manual_seed(0)
    batches = [torch.randn(8, 3, 16, 16) * 2 + 1 for _ in range(3)]
    plain = extract(slim_r18, "w1.0-d1.1.1.1", calib_loader=batches, calib_batches=3)
    reference = extract(slim_r18, "w1.0-d1.1.1.1")
    calibrate_bn(reference, batches, 3)
    stored = slim_r18.layer3[0].bn1.bn[0].running_mean
    assert torch.equal(plain.layer3[0].bn1.running_mean, reference.layer3[0].bn1.running_mean)
    assert not torch.allclose(plain.layer3[0].bn1.running_mean, stored)
    assert torch.equal(plain.layer3[0].bn1.weight, slim_r18.layer3[0].bn1.bn[0].weight)


def test_shallower_network_without_data_warns_and_keeps_full_depth_statistics(slim_r18, caplog):
    with caplog.at_level("WARNING", logger="pretrain.checkpoints.extract"):
        plain = extract(slim_r18, "w0.5-d1.1.1.1")
    assert "full-depth w0.5" in caplog.text and "--calib-data" in caplog.text
    assert torch.equal(plain.layer2[0].bn1.running_mean, slim_r18.layer2[0].bn1.bn[2].running_mean[:64])
    caplog.clear()
    with caplog.at_level("WARNING", logger="pretrain.checkpoints.extract"):
        extract(slim_r18, "w0.5")
    assert caplog.text == ""


def test_calibrate_bn_restores_momentum_and_mode(slim_r18):
    plain = extract(slim_r18, "w0.5")
    used = calibrate_bn(plain, [torch.randn(4, 3, 16, 16) for _ in range(5)], num_batches=3)
    assert used == 3 and not plain.training
    assert all(m.momentum == 0.1 for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_extract_from_checkpoint_object(slim_r18):
    ckpt = Checkpoint.from_model(slim_r18)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(extract(ckpt, "w0.25")(x), extract(slim_r18, "w0.25")(x))
