"""An ADN sub-network as a plain static network: the skipped sub-paths' blocks removed, and in the stages
they belonged to the mandatory blocks' norms replaced by their `norm_skip` twins."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..models.skippable import SkipNorm, SkippableDepthNet
from . import DeployError


def parse_skip(text: str, num_stages: int) -> tuple[bool, ...]:
    """'TTFF' → (True, True, False, False): one letter per stage, T = skip its skippable sub-path."""
    if len(text) != num_stages or any(c not in "TF" for c in text):
        raise DeployError(f"skip: expected {num_stages} letters T/F (one per stage, T = skipped), got {text!r}")
    return tuple(c == "T" for c in text)


def _resolve_norms(block: nn.Module, stage_skipped: bool) -> None:
    for norm in [m for m in block.modules() if isinstance(m, SkipNorm)]:
        if stage_skipped and norm.norm_skip is not None:
            norm.norm = norm.norm_skip
        norm.norm_skip = None  # forward(x, skip) now always uses the one resolved norm


class StaticSubnet(nn.Module):
    """The pruned network run as its own super-net: every remaining block runs with its resolved norms."""

    def __init__(self, net: SkippableDepthNet, skip: tuple[bool, ...]):
        super().__init__()
        self.net = net
        self.skip = skip  # which sub-network of the original this is (for the model card)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, skip=None)


def extract_subnet(model: SkippableDepthNet, skip: tuple[bool, ...]) -> StaticSubnet:
    """A copy of `model` holding only sub-network `skip`'s parameters; same logits as `model(x, skip)`."""
    skip = model.check_skip(skip)
    net = copy.deepcopy(model).eval()
    for s, stage_skipped in enumerate(skip):
        kept = [block for block in net.stages[s] if not (block.skippable and stage_skipped)]
        for block in kept:
            _resolve_norms(block, stage_skipped)
        net.stages[s] = nn.ModuleList(kept)
    return StaticSubnet(net, skip)
