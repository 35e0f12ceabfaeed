"""Swin Transformer with skippable sub-paths (ADN), after the NeurIPS release's behaviour.

torchvision's Swin-T layout, with torchvision's shifted-window attention (relative position bias, cyclic
shift) reused as is. Stage s keeps its first `n_mandatory[s]` blocks (Swin-T: 1, 1, 3, 1, so in stages 1, 2
and 4 the skippable block is the shifted-window one). Mandatory blocks have LayerNorm twins; the patch
merging before stage k has a twin that follows stage k's flag. Patch embedding, final norm and head are
shared. Stochastic depth (linear up to 0.1, the release's value; torchvision uses 0.2) acts in the super path
only: a mandatory block of a skipped stage runs without it.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.swin_transformer import ShiftedWindowAttention
from torchvision.ops import MLP, Permute, StochasticDepth

from .registry import register_model
from .skippable import SkipNorm, SkippableDepthNet, mandatory_counts


class PatchMergingADN(nn.Module):
    """2×2 neighbourhood concat (H, W padded to even) → LayerNorm (with twin) → linear 4C → 2C."""

    def __init__(self, dim: int, twin: bool):
        super().__init__()
        self.norm = SkipNorm(lambda: nn.LayerNorm(4 * dim), twin)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, skip: bool = False) -> torch.Tensor:
        h, w = x.shape[-3:-1]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        # torchvision's order of the four neighbours, so its weights load unchanged
        x = torch.cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]], -1)
        return self.reduction(self.norm(x, skip))


class SwinBlockADN(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float, dropout: float,
                 attention_dropout: float, drop_path: float, skippable: bool, twin_norms: bool,
                 drop_path_in_base: bool):
        super().__init__()
        twin = twin_norms and not skippable
        self.skippable, self.drop_path_in_base = skippable, drop_path_in_base
        self.norm1 = SkipNorm(lambda: nn.LayerNorm(dim), twin)
        self.attn = ShiftedWindowAttention(dim, [window, window], [shift, shift], heads,
                                           attention_dropout=attention_dropout, dropout=dropout)
        self.drop_path = StochasticDepth(drop_path, "row")
        self.norm2 = SkipNorm(lambda: nn.LayerNorm(dim), twin)
        self.mlp = MLP(dim, [int(dim * mlp_ratio), dim], activation_layer=nn.GELU, inplace=None, dropout=dropout)

    def residual(self, x: torch.Tensor, skip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(F(x), x): the block's output is x + F(x)."""
        return self.forward(x, skip) - x, x  # forward, not __call__: diagnostics hook the call

    def forward(self, x: torch.Tensor, skip: bool = False) -> torch.Tensor:
        drop = self.drop_path if self.drop_path_in_base or not skip else nn.Identity()
        x = x + drop(self.attn(self.norm1(x, skip)))
        return x + drop(self.mlp(self.norm2(x, skip)))


class SwinTransformerADN(SkippableDepthNet):
    ARG_LIMITS = {"patch_size": 64, "embed_dim": 2048, "depths": 64, "heads": 64, "window_size": 64, "mlp_ratio": 16,
                  "n_mandatory": 64}  # largest size values built here

    def __init__(
        self,
        num_classes: int = 1000,
        patch_size: int = 4,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        stochastic_depth_prob: float = 0.1,
        n_mandatory: int | Sequence[int] | None = None,
        skip_aware_norms: bool = True,
        drop_path_in_base: bool = False,
    ):
        super().__init__()
        if len(depths) != len(heads):
            raise ValueError("heads: need one head count per stage (depths)")
        mandatory = mandatory_counts(depths, n_mandatory)
        self.patch_embed = nn.Sequential(nn.Conv2d(3, embed_dim, patch_size, patch_size), Permute([0, 2, 3, 1]),
                                         nn.LayerNorm(embed_dim))
        total, index = sum(depths), 0
        self.stages, self.merges = nn.ModuleList(), nn.ModuleList()
        for s, (depth, n_heads, n_mand) in enumerate(zip(depths, heads, mandatory)):
            dim = embed_dim * 2 ** s
            if s:  # merging before stage s follows stage s's flag
                self.merges.append(PatchMergingADN(dim // 2, twin=skip_aware_norms))
            stage = nn.ModuleList()
            for i in range(depth):
                stage.append(SwinBlockADN(dim, n_heads, window_size, 0 if i % 2 == 0 else window_size // 2,
                                          mlp_ratio, dropout, attention_dropout,
                                          stochastic_depth_prob * index / max(total - 1, 1), skippable=i >= n_mand,
                                          twin_norms=skip_aware_norms, drop_path_in_base=drop_path_in_base))
                index += 1
            self.stages.append(stage)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        for m in self.modules():  # torchvision's Swin init (it overrides the MLP's own init as well)
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor, first_skipped: bool) -> torch.Tensor:
        return self.patch_embed(x)

    def between_stages(self, s: int, h: torch.Tensor, stage_skipped: bool) -> torch.Tensor:
        return self.merges[s - 1](h, stage_skipped)

    def classify(self, h: torch.Tensor, last_skipped: bool) -> torch.Tensor:
        return self.head(self.norm(h).mean(dim=(1, 2)))


register_model("swin_t_adn", SwinTransformerADN, num_classes=1000, input_size=224, cost_convention="torchvision")
# CIFAR scale (our own): patch 2 → 16×16 tokens, 3 stages (16, 8, 4 tokens a side), each a whole number of 4×4
# windows (a 4th stage at 2×2 would attend over zero padding).
register_model("swin_cifar_adn", SwinTransformerADN, num_classes=10, input_size=32, cost_convention="torchvision",
               patch_size=2, embed_dim=48, depths=(2, 2, 6), heads=(3, 6, 12), window_size=4)
