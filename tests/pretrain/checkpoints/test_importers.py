import pytest
import torch
import torchvision

from pretrain.checkpoints.format import CheckpointError
from pretrain.checkpoints.importers import import_slimclr, import_torchvision
from pretrain.models.resnet import SlimResNet
from pretrain.checkpoints.extract import extract
from tests.conftest import randomize_bn


def upstream_slimclr_state_dict(model: SlimResNet, prefix: str) -> dict:
    """Write a SlimResNet-50 in the upstream SlimCLR release layout, key by key, as that release does."""
    names = [f"layer{s + 1}.{b}" for s, n in enumerate(model.stage_blocks) for b in range(n)]
    out = {}
    for k, v in model.state_dict().items():
        for i, name in enumerate(names):
            if k.startswith(name + "."):
                rest = k[len(name) + 1:].replace("downsample.0.", "shortcut.0.").replace("downsample.1.", "shortcut.1.")
                k = f"features.{i}.{rest}"
                break
        out[prefix + k] = v.clone()
    out[prefix + "fc.0.weight"] = torch.zeros(2048, 2048)  # the MLP head is dropped on import
    return out


@pytest.mark.parametrize("prefix,method", [("module.encoder_q.", "import:slimclr-mocov2"),
                                           ("module.base_encoder.", "import:slimclr-mocov3")])
def test_slimclr_release_import(prefix, method):
    torch.manual_seed(0)
    ref = randomize_bn(SlimResNet(50)).eval()
    sd = upstream_slimclr_state_dict(ref, prefix)
    assert prefix + "features.15.bn3.bn.3.weight" in sd and prefix + "features.0.shortcut.1.bn.0.running_var" in sd
    ckpt = import_slimclr("upstream.pth", state_dict=sd)
    assert ckpt.method == method and ckpt.widths == [1.0, 0.75, 0.5, 0.25]
    assert ckpt.extra["dropped_keys"] == ["fc.0.weight"]
    model = ckpt.build_model().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for spec in ["w1.0", "w0.25"]:
            assert torch.allclose(extract(model, spec)(x), extract(ref, spec)(x))


def test_slimclr_rejects_foreign_layout():
    with pytest.raises(CheckpointError, match="not a SlimCLR release"):
        import_slimclr("x.pth", state_dict={"conv1.weight": torch.zeros(1)})


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_import_round_trip(name):
    tv = getattr(torchvision.models, name)().eval()
    randomize_bn(tv)
    ckpt = import_torchvision("tv.pth", state_dict=tv.state_dict())
    assert ckpt.widths == [1.0] and ckpt.arch["arch"] == "slim_resnet" + name[len("resnet"):]
    plain = extract(ckpt, "w1.0")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (plain(x) - tv(x)).abs().max().item() <= 1e-5


def test_torchvision_rejects_non_resnet():
    with pytest.raises(CheckpointError, match="conv1.weight"):
        import_torchvision("x.pth", state_dict={"features.0.weight": torch.zeros(1)})
