"""Shared fixtures: tiny slimmable networks with non-trivial BatchNorm state."""
import pytest
import torch

from pretrain.resnet import SlimResNet


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm distinct affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model


@pytest.fixture
def slim_r18():
    torch.manual_seed(0)
    return randomize_bn(SlimResNet(18, widths=[1.0, 0.75, 0.5, 0.25], stem="small")).eval()
