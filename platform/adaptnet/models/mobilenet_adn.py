"""MobileNetV2 with skippable sub-paths (ADN), after the NeurIPS release's behaviour.

torchvision's MobileNetV2 layout. The stages with at least two inverted-residual blocks (c = 24, 32, 64, 96,
160) are the S = 5 skippable stages; their block 0 (stride and/or width change) is always mandatory. Every
BN outside skippable blocks has a skip twin, including the layers outside the stages: the stem conv and the
first (t=1) block follow `skip[0]`, the c=320 block and the last 1×1 conv follow `skip[-1]`, as the official
`SkippableSequentialStages` routes them. Only the classifier is shared by all sub-networks.
The official `forward` defaults to the base-net; here, as for every adaptnet ADN model, `skip=None` is the
super-net.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from .registry import register_model
from .skippable import SkipNorm, SkippableDepthNet, mandatory_counts

# torchvision's inverted-residual setting: expansion t, width c, blocks n, stride s of the first block.
TORCHVISION_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1))


def _make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: nearest multiple of `divisor`, never below 90% of `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvNormAct(nn.Module):
    """conv → BN (with an optional skip twin) → ReLU6 (or none for the linear bottleneck)."""

    def __init__(self, n_in: int, n_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True,
                 twin: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(n_in, n_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        self.bn = SkipNorm(lambda: nn.BatchNorm2d(n_out), twin)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor, skip: bool = False) -> torch.Tensor:
        return self.act(self.bn(self.conv(x), skip))


class InvertedResidualADN(nn.Module):
    def __init__(self, n_in: int, n_out: int, stride: int, expand: int, skippable: bool, twin_norms: bool):
        super().__init__()
        twin = twin_norms and not skippable
        hidden = round(n_in * expand)
        self.skippable = skippable
        self.use_residual = stride == 1 and n_in == n_out
        if skippable and not self.use_residual:
            raise ValueError("n_mandatory: a skippable block must keep its input's shape (stride 1, same width)")
        layers = [ConvNormAct(n_in, hidden, 1, twin=twin)] if expand != 1 else []
        layers += [ConvNormAct(hidden, hidden, 3, stride, groups=hidden, twin=twin),
                   ConvNormAct(hidden, n_out, 1, act=False, twin=twin)]
        self.layers = nn.ModuleList(layers)

    def branch(self, x: torch.Tensor, skip: bool) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, skip)
        return x

    def residual(self, x: torch.Tensor, skip: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(F(x), x) for a residual block, (F(x), None) where the block has no shortcut."""
        return self.branch(x, skip), x if self.use_residual else None

    def forward(self, x: torch.Tensor, skip: bool = False) -> torch.Tensor:
        out = self.branch(x, skip)
        return x + out if self.use_residual else out


class MobileNetV2ADN(SkippableDepthNet):
    ARG_LIMITS = {"width_mult": 16, "setting": 1024, "n_mandatory": 64}  # largest size values built here

    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        setting: Sequence[Sequence[int]] = TORCHVISION_SETTING,
        stem: Literal["imagenet", "cifar"] = "imagenet",
        n_mandatory: int | Sequence[int] | None = None,
        skip_aware_norms: bool = True,
        dropout: float = 0.2,
    ):
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem: must be 'imagenet' or 'cifar', got {stem!r}")
        multi = [i for i, (_, _, n, _) in enumerate(setting) if n >= 2]
        if not multi or any(setting[i][2] < 2 for i in range(multi[0], multi[-1] + 1)):
            raise ValueError("setting: the stages with 2+ blocks (the skippable ones) must be consecutive")
        # cifar: stride 1 in the stem and in the first skippable stage, for 32×32 inputs (a common adaptation).
        strides = [s if stem == "imagenet" or i != multi[0] else 1 for i, (_, _, _, s) in enumerate(setting)]
        mandatory = iter(mandatory_counts([setting[i][2] for i in multi], n_mandatory))
        n_in = _make_divisible(32 * width_mult)
        self.head_layers = nn.ModuleList([ConvNormAct(3, n_in, 3, 2 if stem == "imagenet" else 1,
                                                      twin=skip_aware_norms)])
        self.stages, self.tail_layers = nn.ModuleList(), nn.ModuleList()
        for i, ((t, c, n, _), stride) in enumerate(zip(setting, strides)):
            n_out = _make_divisible(c * width_mult)
            n_mand = next(mandatory) if i in multi else n
            blocks = []
            for b in range(n):
                blocks.append(InvertedResidualADN(n_in, n_out, stride if b == 0 else 1, t, skippable=b >= n_mand,
                                                  twin_norms=skip_aware_norms))
                n_in = n_out
            if i in multi:
                self.stages.append(nn.ModuleList(blocks))
            else:  # single blocks before the stages follow skip[0], those after follow skip[-1]
                (self.head_layers if i < multi[0] else self.tail_layers).extend(blocks)
        last = _make_divisible(1280 * max(1.0, width_mult))
        self.tail_layers.append(ConvNormAct(n_in, last, 1, twin=skip_aware_norms))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        for m in self.modules():  # torchvision's MobileNetV2 init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor, first_skipped: bool) -> torch.Tensor:
        for layer in self.head_layers:
            x = layer(x, first_skipped)
        return x

    def classify(self, h: torch.Tensor, last_skipped: bool) -> torch.Tensor:
        for layer in self.tail_layers:
            h = layer(h, last_skipped)
        return self.classifier(torch.flatten(self.pool(h), 1))


# The paper's MbV2-ADN GFLOPs (0.32 / 0.22) are ptflops's count (metrics.costs); torchvision's is 0.30 / 0.21.
register_model("mobilenet_v2_adn", MobileNetV2ADN, num_classes=1000, input_size=224, cost_convention="ptflops")
register_model("mobilenet_v2_cifar_adn", MobileNetV2ADN, num_classes=10, input_size=32, cost_convention="torchvision",
               stem="cifar")
