"""Multi-Scale Dense Network (Huang et al., ICLR 2018), built as the MSDNet-PyTorch reference does.

Every constructor argument of the reference (nBlocks, base, step, stepmode, nChannels, growthRate,
grFactor, bnFactor, prune, reduction, bottleneck, data) is exposed under a snake_case name.
`forward` returns one logits tensor per exit; `forward(x, return_features=True)` also returns the
pooled feature each exit's linear classifier reads (what ISC heads consume).
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
from torch import nn

from .registry import register_model
from .exits import MultiExitNet


def conv_bn_relu(n_in: int, n_out: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> nn.Sequential:
    """The reference `ConvBasic`: post-activation Conv (no bias) → BN → ReLU."""
    return nn.Sequential(
        nn.Conv2d(n_in, n_out, kernel, stride, padding, bias=False),
        nn.BatchNorm2d(n_out),
        nn.ReLU(inplace=True),
    )


def bottleneck_conv(n_in: int, n_out: int, stride: int, bottleneck: bool, bn_width: int) -> nn.Sequential:
    """The reference `ConvBN`: optional 1×1 bottleneck to min(n_in, bn_width·n_out), then a 3×3 conv."""
    layers: list[nn.Module] = []
    n_inner = n_in
    if bottleneck:
        n_inner = min(n_in, bn_width * n_out)
        layers += conv_bn_relu(n_in, n_inner, kernel=1, padding=0)
    layers += conv_bn_relu(n_inner, n_out, kernel=3, stride=stride, padding=1)
    return nn.Sequential(*layers)


class DenseNormal(nn.Module):
    """Finest kept scale: cat[x, conv(x)]."""

    def __init__(self, n_in: int, n_out: int, bottleneck: bool, bn_width: int):
        super().__init__()
        self.conv_normal = bottleneck_conv(n_in, n_out, 1, bottleneck, bn_width)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        (x,) = inputs
        return torch.cat([x, self.conv_normal(x)], dim=1)


class DenseDownNormal(nn.Module):
    """Coarser scale: cat[x_s, strided conv(x_{s-1}), conv(x_s)], each new part n_out/2 wide."""

    def __init__(self, n_in_finer: int, n_in: int, n_out: int, bottleneck: bool, bn_finer: int, bn_width: int):
        super().__init__()
        self.conv_down = bottleneck_conv(n_in_finer, n_out // 2, 2, bottleneck, bn_finer)
        self.conv_normal = bottleneck_conv(n_in, n_out // 2, 1, bottleneck, bn_width)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        finer, x = inputs
        return torch.cat([x, self.conv_down(finer), self.conv_normal(x)], dim=1)


class MSDStem(nn.Module):
    """First layer: one feature map per scale, each scale a stride-2 conv of the previous one."""

    def __init__(self, n_channels: int, gr_factor: Sequence[int], data: str):
        super().__init__()
        width0 = n_channels * gr_factor[0]
        if data == "cifar":
            first = conv_bn_relu(3, width0)
        else:  # ImageNet stem: 7×7/2 conv (with bias, as the reference), BN, ReLU, 3×3/2 max-pool
            first = nn.Sequential(
                nn.Conv2d(3, width0, 7, 2, 3), nn.BatchNorm2d(width0), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
            )
        self.layers = nn.ModuleList([first])
        for s in range(1, len(gr_factor)):
            self.layers.append(conv_bn_relu(n_channels * gr_factor[s - 1], n_channels * gr_factor[s], stride=2))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        scales = []
        for layer in self.layers:
            x = layer(x)
            scales.append(x)
        return scales


class MSDLayer(nn.Module):
    """One multi-scale dense layer mapping `in_scales` inputs to the `out_scales` coarsest scales."""

    def __init__(self, n_in: int, growth: int, gr_factor, bn_factor, bottleneck: bool, in_scales: int, out_scales: int):
        super().__init__()
        n_scales = len(gr_factor)
        self.discard = in_scales - out_scales
        self.out_scales = out_scales
        offset = n_scales - out_scales
        self.layers = nn.ModuleList()
        if self.discard > 0:
            first_finer = offset - 1
        else:
            self.layers.append(
                DenseNormal(n_in * gr_factor[offset], growth * gr_factor[offset], bottleneck, bn_factor[offset])
            )
            first_finer = offset
        for s in range(first_finer + 1, n_scales):
            self.layers.append(
                DenseDownNormal(
                    n_in * gr_factor[s - 1], n_in * gr_factor[s], growth * gr_factor[s],
                    bottleneck, bn_factor[s - 1], bn_factor[s],
                )
            )

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.discard > 0:
            inputs = [[x[s - 1], x[s]] for s in range(1, self.out_scales + 1)]
        else:
            inputs = [[x[0]]] + [[x[s - 1], x[s]] for s in range(1, self.out_scales)]
        return [layer(inp) for layer, inp in zip(self.layers, inputs)]


class PerScale(nn.Module):
    """Applies one module per scale (the reference `ParallelModule`, used for transitions)."""

    def __init__(self, modules: Sequence[nn.Module]):
        super().__init__()
        self.m = nn.ModuleList(modules)

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        return [m(t) for m, t in zip(self.m, x)]


class ExitHead(nn.Module):
    """Two strided 3×3 convs and a 2×2 average pool on the coarsest scale, then a linear classifier."""

    def __init__(self, n_in: int, inter: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(n_in, inter, stride=2), conv_bn_relu(inter, inter, stride=2), nn.AvgPool2d(2), nn.Flatten()
        )
        self.linear = nn.Linear(inter, num_classes)
        self.feature_dim = inter

    def forward(self, x: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.features(x[-1])
        return self.linear(feature), feature


def block_steps(n_blocks: int, base: int, step: int, stepmode: str) -> list[int]:
    """Layers per block: `base` first, then `step` (even) or `step·i+1` (lin_grow)."""
    return [base] + [step if stepmode == "even" else step * i + 1 for i in range(1, n_blocks)]


def kept_scales(layer: int, n_layers: int, n_scales: int, prune: str) -> tuple[int, int]:
    """(in_scales, out_scales) of the 1-indexed global `layer`, as the reference prunes scales."""
    if prune == "max":
        interval = math.ceil(n_layers / n_scales)
        return n_scales - max(0, layer - 2) // interval, n_scales - (layer - 1) // interval
    return min(n_scales, n_layers - layer + 2), min(n_scales, n_layers - layer + 1)


class MSDNet(MultiExitNet):
    # the largest value of each size argument built here (checked before any build; the papers use ≤ 10 blocks)
    ARG_LIMITS = {"n_blocks": 64, "base": 64, "step": 64, "n_channels": 1024, "growth_rate": 256, "gr_factor": 16,
                  "bn_factor": 16}

    def __init__(
        self,
        num_classes: int = 10,
        n_blocks: int = 7,
        base: int = 4,
        step: int = 2,
        stepmode: Literal["even", "lin_grow"] = "even",
        n_channels: int = 16,
        growth_rate: int = 6,
        gr_factor: Sequence[int] = (1, 2, 4),
        bn_factor: Sequence[int] = (1, 2, 4),
        prune: Literal["max", "min"] = "max",
        reduction: float = 0.5,
        bottleneck: bool = True,
        data: Literal["cifar", "imagenet"] = "cifar",
        he_init: bool = False,
        ge_scope: Literal["coarsest", "all"] | None = None,
    ):
        super().__init__(ge_scope=ge_scope)
        if stepmode not in ("even", "lin_grow"):
            raise ValueError(f"stepmode: must be 'even' or 'lin_grow', got {stepmode!r}")
        if prune not in ("max", "min"):
            raise ValueError(f"prune: must be 'max' or 'min', got {prune!r}")
        if data not in ("cifar", "imagenet"):
            raise ValueError(f"data: must be 'cifar' or 'imagenet', got {data!r}")
        if len(gr_factor) != len(bn_factor):
            raise ValueError("gr_factor and bn_factor must have one entry per scale")
        if not isinstance(bottleneck, bool):  # the reference's argparse type=bool made "False" truthy
            raise TypeError(f"bottleneck: must be a bool, got {bottleneck!r}")
        n_scales = len(gr_factor)
        self.steps = block_steps(n_blocks, base, step, stepmode)
        n_layers = sum(self.steps)

        self.blocks = nn.ModuleList()
        self.heads = nn.ModuleList()
        n_in, layer = n_channels, 0
        for block_index, n_steps in enumerate(self.steps):
            modules: list[nn.Module] = [MSDStem(n_channels, gr_factor, data)] if block_index == 0 else []
            for _ in range(n_steps):
                layer += 1
                in_scales, out_scales = kept_scales(layer, n_layers, n_scales, prune)
                modules.append(MSDLayer(n_in, growth_rate, gr_factor, bn_factor, bottleneck, in_scales, out_scales))
                n_in += growth_rate
                transition = (
                    in_scales > out_scales if prune == "max"
                    else layer in (math.floor(n_layers / 3), math.floor(2 * n_layers / 3))
                )
                if transition and reduction > 0:
                    n_out = math.floor(reduction * n_in)
                    offset = n_scales - out_scales
                    modules.append(PerScale([
                        conv_bn_relu(n_in * gr_factor[offset + s], n_out * gr_factor[offset + s], kernel=1, padding=0)
                        for s in range(out_scales)
                    ]))
                    n_in = n_out
            self.blocks.append(nn.Sequential(*modules))
            head_in = n_in * gr_factor[-1]
            self.heads.append(ExitHead(head_in, 128 if data == "cifar" else head_in, num_classes))
        if he_init:
            self.apply(_he_init)

    @property
    def feature_dims(self) -> list[int]:
        return [head.feature_dim for head in self.heads]


def _he_init(m: nn.Module) -> None:
    """The init the reference intended but never applied (Lua original): He fan-out, BN (1, 0), bias 0."""
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.zeros_(m.bias)


_CIFAR = dict(n_channels=16, growth_rate=6, gr_factor=(1, 2, 4), bn_factor=(1, 2, 4), data="cifar")
_IMAGENET = dict(n_blocks=5, stepmode="even", n_channels=32, growth_rate=16,
                 gr_factor=(1, 2, 4, 4), bn_factor=(1, 2, 4, 4), data="imagenet")

register_model("msdnet_cifar_anytime", MSDNet, num_classes=10, input_size=32,
               n_blocks=7, base=4, step=2, stepmode="even", **_CIFAR)
register_model("msdnet_cifar_anytime10", MSDNet, num_classes=10, input_size=32,
               n_blocks=10, base=4, step=2, stepmode="even", **_CIFAR)
register_model("msdnet_cifar_budgeted", MSDNet, num_classes=10, input_size=32,
               n_blocks=5, base=1, step=1, stepmode="lin_grow", **_CIFAR)
register_model("msdnet_cifar_budgeted7", MSDNet, num_classes=10, input_size=32,
               n_blocks=7, base=1, step=1, stepmode="lin_grow", **_CIFAR)
for _step in (4, 6, 7):
    register_model(f"msdnet_imagenet_step{_step}", MSDNet, num_classes=1000, input_size=224,
                   base=_step, step=_step, **_IMAGENET)
