"""ResNet with skippable sub-paths (ADN, Kang & Lee, NeurIPS 2024), after the NeurIPS release's behaviour.

Every stage is split into mandatory blocks (block 0, with the stride and projection shortcut, always among
them) and skippable blocks. Norms in mandatory blocks have skip twins; the stem BN, the projection-shortcut
BN and the classifier are shared by all sub-networks. CIFAR variants use a 3×3 stem and 3 stages of
basic blocks (widths 16/32/64) with projection shortcuts where the shape changes.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from .registry import register_model
from .skippable import SkipNorm, SkippableDepthNet, mandatory_counts


def _projection(n_in: int, n_out: int, stride: int) -> nn.Module:
    if stride == 1 and n_in == n_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(n_in, n_out, 1, stride, bias=False), nn.BatchNorm2d(n_out))


class _ResidualBlock(nn.Module):
    """relu(F(x) + shortcut(x)), with F and the shortcut given by `residual` (also read by diagnostics)."""

    def forward(self, x: torch.Tensor, skip: bool = False) -> torch.Tensor:
        branch, identity = self.residual(x, skip)
        return self.relu(branch + identity)


class BasicBlockADN(_ResidualBlock):
    expansion = 1

    def __init__(self, n_in: int, width: int, stride: int, skippable: bool, twin_norms: bool):
        super().__init__()
        twin = twin_norms and not skippable
        self.skippable = skippable
        self.conv1 = nn.Conv2d(n_in, width, 3, stride, 1, bias=False)
        self.bn1 = SkipNorm(lambda: nn.BatchNorm2d(width), twin)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = SkipNorm(lambda: nn.BatchNorm2d(width), twin)
        self.shortcut = _projection(n_in, width, stride)
        self.relu = nn.ReLU(inplace=True)

    def residual(self, x: torch.Tensor, skip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.relu(self.bn1(self.conv1(x), skip))
        return self.bn2(self.conv2(out), skip), self.shortcut(x)


class BottleneckADN(_ResidualBlock):
    """torchvision's v1.5 bottleneck (stride on the 3×3 conv)."""

    expansion = 4

    def __init__(self, n_in: int, width: int, stride: int, skippable: bool, twin_norms: bool):
        super().__init__()
        twin = twin_norms and not skippable
        n_out = width * self.expansion
        self.skippable = skippable
        self.conv1 = nn.Conv2d(n_in, width, 1, bias=False)
        self.bn1 = SkipNorm(lambda: nn.BatchNorm2d(width), twin)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = SkipNorm(lambda: nn.BatchNorm2d(width), twin)
        self.conv3 = nn.Conv2d(width, n_out, 1, bias=False)
        self.bn3 = SkipNorm(lambda: nn.BatchNorm2d(n_out), twin)
        self.shortcut = _projection(n_in, n_out, stride)
        self.relu = nn.ReLU(inplace=True)

    def residual(self, x: torch.Tensor, skip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.relu(self.bn1(self.conv1(x), skip))
        out = self.relu(self.bn2(self.conv2(out), skip))
        return self.bn3(self.conv3(out), skip), self.shortcut(x)


class ResNetADN(SkippableDepthNet):
    ARG_LIMITS = {"depths": 64, "widths": 8192, "n_mandatory": 64}  # largest size values built here

    def __init__(
        self,
        num_classes: int = 1000,
        block: Literal["basic", "bottleneck"] = "bottleneck",
        depths: Sequence[int] = (3, 4, 6, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        stem: Literal["cifar", "imagenet"] = "imagenet",
        n_mandatory: int | Sequence[int] | None = None,
        skip_aware_norms: bool = True,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block: must be 'basic' or 'bottleneck', got {block!r}")
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem: must be 'cifar' or 'imagenet', got {stem!r}")
        if len(depths) != len(widths):
            raise ValueError("depths and widths need one entry per stage")
        block_cls = BasicBlockADN if block == "basic" else BottleneckADN
        mandatory = mandatory_counts(depths, n_mandatory)
        if stem == "cifar":
            self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                      nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        n_in = widths[0]
        self.stages = nn.ModuleList()
        for s, (depth, width, n_mand) in enumerate(zip(depths, widths, mandatory)):
            stride = 1 if s == 0 else 2
            stage = nn.ModuleList()
            for i in range(depth):
                stage.append(block_cls(n_in, width, stride if i == 0 else 1, skippable=i >= n_mand,
                                       twin_norms=skip_aware_norms))
                n_in = width * block_cls.expansion
            self.stages.append(stage)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(n_in, num_classes)
        for m in self.modules():  # torchvision's ResNet init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for _, _, blk in self.blocks_with_position():
                last = blk.bn3 if isinstance(blk, BottleneckADN) else blk.bn2
                for norm in (last.norm, last.norm_skip):
                    if norm is not None:
                        nn.init.zeros_(norm.weight)

    def embed(self, x: torch.Tensor, first_skipped: bool) -> torch.Tensor:
        return self.stem(x)

    def classify(self, h: torch.Tensor, last_skipped: bool) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(h), 1))


_CIFAR = dict(block="basic", widths=(16, 32, 64), stem="cifar")
register_model("resnet56_adn", ResNetADN, num_classes=10, input_size=32, cost_convention="torchvision",
               depths=(9, 9, 9), **_CIFAR)
register_model("resnet110_adn", ResNetADN, num_classes=10, input_size=32, cost_convention="torchvision",
               depths=(18, 18, 18), **_CIFAR)
register_model("resnet50_adn", ResNetADN, num_classes=1000, input_size=224, cost_convention="torchvision",
               block="bottleneck", depths=(3, 4, 6, 3))
register_model("resnet101_adn", ResNetADN, num_classes=1000, input_size=224, cost_convention="torchvision",
               block="bottleneck", depths=(3, 4, 23, 3))
