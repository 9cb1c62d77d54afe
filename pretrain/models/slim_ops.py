"""Slimmable layers: convolutions and linear layers that run on their leading channels, and
switchable BatchNorm with private affine parameters and running statistics per listed width.

A layer does not know the width multiplier; its owner (``SlimResNet``, ``SlimMLP``) computes the
channel counts once from the channel rule and sets ``active_out`` / ``active_index`` on each layer.
Input channels are taken from the input itself, so a layer always agrees with its producer.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def channels(c: int, width: float) -> int:
    """The channel rule: width ``w`` keeps the first ``int(c * w)`` of ``c`` channels."""
    return max(1, int(c * width + 1e-9))


class SlimConv2d(nn.Conv2d):
    """``nn.Conv2d`` that uses the first ``active_out`` filters over the input's channels."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.groups != 1:
            raise ValueError("SlimConv2d supports groups=1 only")
        self.active_out: Optional[int] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.active_out or self.out_channels
        weight = self.weight[:out, : x.shape[1]]
        bias = self.bias[:out] if self.bias is not None else None
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, 1)


class SlimLinear(nn.Linear):
    """``nn.Linear`` that uses the first ``active_out`` outputs over the input's features."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.active_out: Optional[int] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.active_out or self.out_features
        bias = self.bias[:out] if self.bias is not None else None
        return F.linear(x, self.weight[:out, : x.shape[-1]], bias)


class _SwitchableBatchNorm(nn.Module):
    """One BatchNorm per listed width, each sized to that width's channel count."""

    _bn_cls = nn.BatchNorm2d

    def __init__(self, num_features: Sequence[int], affine: bool = True, **kwargs):
        super().__init__()
        self.num_features_per_width = [int(c) for c in num_features]
        self.bn = nn.ModuleList(self._bn_cls(c, affine=affine, **kwargs) for c in self.num_features_per_width)
        self.active_index = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn[self.active_index]
        if x.shape[1] != bn.num_features:
            raise RuntimeError(
                f"switchable BN {self.active_index} expects {bn.num_features} channels, got {x.shape[1]}"
            )
        return bn(x)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features_per_width}"


class SwitchableBatchNorm2d(_SwitchableBatchNorm):
    """Switchable BatchNorm over (N, C, H, W)."""

    _bn_cls = nn.BatchNorm2d


class SwitchableBatchNorm1d(_SwitchableBatchNorm):
    """Switchable BatchNorm over (N, C)."""

    _bn_cls = nn.BatchNorm1d


class SlimMLP(nn.Module):
    """A slimmable projection / prediction head built from (in, out, bn, relu) blocks.

    Hidden sizes scale with the width; the input follows the producer; the final output size
    stays fixed unless ``slim_output`` is set, so every width shares one embedding space.
    """

    def __init__(self, dims: Sequence[int], widths: Sequence[float], last_bn: bool = False,
                 bn: bool = True, last_bn_affine: bool = True, slim_output: bool = False,
                 bias: "Optional[bool | Sequence[bool]]" = None):
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"an MLP needs at least input and output sizes, got {list(dims)}")
        self.widths = [float(w) for w in widths]
        self.dims = list(dims)
        if bias is not None and not isinstance(bias, bool) and len(bias) != len(dims) - 1:
            raise ValueError(f"bias: expected one flag per linear layer ({len(dims) - 1}), got {list(bias)}")
        self.slim_output = slim_output
        layers = []
        n = len(dims) - 1
        for i in range(n):
            last = i == n - 1
            use_bn = last_bn if last else bn
            # By default a linear layer has a bias unless a BN follows; MoCo v3 has none at all, SimCLR's
            # head one on its first layer only (``bias`` per layer).
            has_bias = not use_bn if bias is None else bias if isinstance(bias, bool) else bias[i]
            layers.append(SlimLinear(dims[i], dims[i + 1], bias=has_bias))
            if use_bn:
                sizes = [self._out_size(i, w) for w in self.widths]
                affine = last_bn_affine if last else True
                layers.append(SwitchableBatchNorm1d(sizes, affine=affine))
            if not last:
                layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers)
        self.set_width_index(0)

    def _out_size(self, i: int, width: float) -> int:
        last = i == len(self.dims) - 2
        return self.dims[i + 1] if (last and not self.slim_output) else channels(self.dims[i + 1], width)

    def set_width_index(self, index: int) -> None:
        """Run the head at the listed width number ``index``."""
        width = self.widths[index]
        linear_i = 0
        for m in self.layers:
            if isinstance(m, SlimLinear):
                m.active_out = self._out_size(linear_i, width)
                linear_i += 1
            elif isinstance(m, _SwitchableBatchNorm):
                m.active_index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def describe(self, index: int, in_features: int):
        """``(text, out_features)``: the layers this head runs at width number ``index`` on ``in_features``."""
        width, parts, size, linear_i = self.widths[index], [], in_features, 0
        for m in self.layers:
            if isinstance(m, SlimLinear):
                out = self._out_size(linear_i, width)
                parts.append(f"Linear({size}->{out}{'' if m.bias is not None else ', no bias'})")
                size, linear_i = out, linear_i + 1
            elif isinstance(m, _SwitchableBatchNorm):
                parts.append("BN" if m.bn[index].affine else "BN(no affine)")
            elif isinstance(m, nn.ReLU):
                parts.append("ReLU")
        return " ".join(parts), size


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Run training-mode BatchNorm (batch statistics) without updating any running statistics.

    Momentum 0 keeps the running averages as they are; the forward and its gradients are unchanged.
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    try:
        yield
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
