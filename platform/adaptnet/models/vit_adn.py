"""Vision Transformer with skippable sub-paths (ADN): 12 blocks form pseudo-stages of 3; the last block of
each is skippable and the mandatory blocks have skip-aware LayerNorm twins. Patch embedding, class token,
position embedding, the final LayerNorm and the head are shared by all sub-networks. Initialised as
torchvision's VisionTransformer, on which the official ADN ViT is built.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model
from .skippable import SkipNorm, SkippableDepthNet


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads: {heads} does not divide the width {dim}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # nn.MultiheadAttention's init (torchvision's ViT uses it): xavier qkv, zero biases, default proj weight
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(n, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(n, tokens, dim))


class EncoderBlockADN(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float, skippable: bool, twin_norms: bool):
        super().__init__()
        twin = twin_norms and not skippable
        self.skippable = skippable
        self.ln_1 = SkipNorm(lambda: nn.LayerNorm(dim, eps=1e-6), twin)
        self.attention = SelfAttention(dim, heads)
        self.ln_2 = SkipNorm(lambda: nn.LayerNorm(dim, eps=1e-6), twin)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim),
                                 nn.Dropout(dropout))
        for m in self.mlp:  # torchvision's MLPBlock init
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.normal_(m.bias, std=1e-6)

    def residual(self, x: torch.Tensor, skip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(F(x), x): the block's output is x + F(x)."""
        h = x + self.attention(self.ln_1(x, skip))
        h = h + self.mlp(self.ln_2(h, skip))
        return h - x, x

    def forward(self, x: torch.Tensor, skip: bool = False) -> torch.Tensor:
        h = x + self.attention(self.ln_1(x, skip))
        return h + self.mlp(self.ln_2(h, skip))


class VisionTransformerADN(SkippableDepthNet):
    ARG_LIMITS = {"image_size": 1024, "patch_size": 256, "dim": 4096, "depth": 96, "heads": 64, "mlp_dim": 16384,
                  "blocks_per_stage": 96, "skippable_per_stage": 96}  # largest size values built here

    def __init__(
        self,
        num_classes: int = 1000,
        image_size: int = 224,
        patch_size: int = 16,
        dim: int = 768,
        depth: int = 12,
        heads: int = 12,
        mlp_dim: int = 3072,
        dropout: float = 0.0,
        blocks_per_stage: int = 3,
        skippable_per_stage: int = 1,
        skip_aware_norms: bool = True,
    ):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"patch_size: {patch_size} does not divide image_size {image_size}")
        if depth % blocks_per_stage or not 1 <= skippable_per_stage < blocks_per_stage:
            raise ValueError(f"blocks_per_stage/skippable_per_stage: {depth} blocks cannot form stages of "
                             f"{blocks_per_stage} with {skippable_per_stage} skippable")
        self.patch_size = patch_size
        self.conv_proj = nn.Conv2d(3, dim, patch_size, patch_size)
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / (3 * patch_size ** 2)))  # torchvision's
        nn.init.zeros_(self.conv_proj.bias)
        tokens = (image_size // patch_size) ** 2 + 1
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.empty(1, tokens, dim).normal_(std=0.02))
        self.dropout = nn.Dropout(dropout)
        first_skippable = blocks_per_stage - skippable_per_stage
        self.stages = nn.ModuleList(
            nn.ModuleList(EncoderBlockADN(dim, heads, mlp_dim, dropout, skippable=i >= first_skippable,
                                          twin_norms=skip_aware_norms) for i in range(blocks_per_stage))
            for _ in range(depth // blocks_per_stage)
        )
        self.ln = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.zeros_(self.head.weight)  # torchvision's ViT head init
        nn.init.zeros_(self.head.bias)

    def embed(self, x: torch.Tensor, first_skipped: bool) -> torch.Tensor:
        tokens = self.conv_proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.class_token.expand(len(x), -1, -1), tokens], dim=1)
        return self.dropout(tokens + self.pos_embedding)

    def classify(self, h: torch.Tensor, last_skipped: bool) -> torch.Tensor:
        return self.head(self.ln(h)[:, 0])


register_model("vit_b16_adn", VisionTransformerADN, num_classes=1000, input_size=224, cost_convention="torchvision")
register_model("vit_t4_cifar_adn", VisionTransformerADN, num_classes=10, input_size=32, cost_convention="torchvision",
               image_size=32, patch_size=4, dim=192, depth=12, heads=3, mlp_dim=768)
