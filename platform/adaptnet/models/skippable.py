"""What every adaptive-depth (ADN) model shares: stages split into a mandatory and a skippable sub-path,
skip-aware norm twins, and the `skip` tuple that selects one of the 2^S sub-networks.

Skipping a stage's skippable sub-path means not running those blocks (they are identity-shortcut residual
blocks, so shapes never change); the mandatory blocks of that stage then use their `norm_skip` twins.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import torch
from torch import nn


class SkipNorm(nn.Module):
    """A norm layer with an optional twin (own affine parameters and running statistics) used when the
    block's stage is skipped."""

    def __init__(self, make_norm: Callable[[], nn.Module], twin: bool):
        super().__init__()
        self.norm = make_norm()
        self.norm_skip = make_norm() if twin else None

    def forward(self, x: torch.Tensor, skip: bool) -> torch.Tensor:
        return self.norm_skip(x) if skip and self.norm_skip is not None else self.norm(x)


def default_mandatory(blocks: int) -> int:
    """min(N−1, ceil(N/2)) mandatory blocks: the NeurIPS release's split (block 0 always mandatory)."""
    return min(blocks - 1, math.ceil(blocks / 2))


def mandatory_counts(depths: Sequence[int], n_mandatory: int | Sequence[int] | None) -> list[int]:
    if n_mandatory is None:
        return [default_mandatory(n) for n in depths]
    counts = [n_mandatory] * len(depths) if isinstance(n_mandatory, int) else list(n_mandatory)
    if len(counts) != len(depths) or any(not 1 <= m < n for m, n in zip(counts, depths)):
        raise ValueError(f"n_mandatory: need one count in [1, blocks − 1] per stage (every stage keeps a skippable "
                         f"block) for depths {list(depths)}, got {counts}")
    return counts


class SkippableDepthNet(nn.Module):
    """Subclasses build `self.stages` (a ModuleList of ModuleLists of blocks with a `skippable` attribute and
    `forward(h, skip)`) and implement `embed` (input → stage 0, following stage 0's flag) and `classify` (last
    stage → logits, following the last flag); `between_stages` holds what runs before stage s > 0 under its flag.
    `forward` runs one sub-network, `subnet_logits` all 2^S of them."""

    stages: nn.ModuleList
    primary_output = "super"

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def check_skip(self, skip: Sequence[bool] | None) -> tuple[bool, ...]:
        """None → the super-net (all False). Otherwise exactly one bool per stage; nothing else is accepted."""
        if skip is None:
            return (False,) * self.num_stages
        if isinstance(skip, (str, bytes)) or not isinstance(skip, Sequence):
            raise TypeError(f"skip: expected a tuple of {self.num_stages} bools, got {skip!r}")
        if len(skip) != self.num_stages:
            raise ValueError(f"skip: expected {self.num_stages} flags (one per stage), got {len(skip)}")
        if not all(isinstance(s, bool) for s in skip):
            raise TypeError(f"skip: flags must be bools (True/False), got {tuple(skip)!r}")
        return tuple(skip)

    def skip_configs(self) -> list[tuple[bool, ...]]:
        """All 2^S sub-networks, super-net (all False) first, base-net (all True) last."""
        return [tuple(c) for c in itertools.product((False, True), repeat=self.num_stages)]

    @staticmethod
    def run_stage(stage: nn.ModuleList, h: torch.Tensor, stage_skipped: bool) -> torch.Tensor:
        """The stage's blocks in order; a skipped stage does not call its skippable blocks (the identity)."""
        for block in stage:
            if block.skippable and stage_skipped:
                continue
            h = block(h, stage_skipped)
        return h

    def embed(self, x: torch.Tensor, first_skipped: bool) -> torch.Tensor:
        raise NotImplementedError

    def between_stages(self, s: int, h: torch.Tensor, stage_skipped: bool) -> torch.Tensor:
        return h

    def classify(self, h: torch.Tensor, last_skipped: bool) -> torch.Tensor:
        raise NotImplementedError

    def step(self, s: int, h: torch.Tensor, stage_skipped: bool) -> torch.Tensor:
        """Stage s with what precedes it (the embedding before stage 0) and, after the last stage, the classifier."""
        h = self.embed(h, stage_skipped) if s == 0 else self.between_stages(s, h, stage_skipped)
        h = self.run_stage(self.stages[s], h, stage_skipped)
        return self.classify(h, stage_skipped) if s == self.num_stages - 1 else h

    def forward(self, x: torch.Tensor, skip: Sequence[bool] | None = None) -> torch.Tensor:
        for s, stage_skipped in enumerate(self.check_skip(skip)):
            x = self.step(s, x, stage_skipped)
        return x

    def subnet_logits(self, x: torch.Tensor) -> dict[tuple[bool, ...], torch.Tensor]:
        """Every sub-network's logits, in `skip_configs` order, each equal to `self(x, skip)`. Sub-networks that
        agree on stages 0..s share those stages' output: 2 + 4 + … + 2^S stage runs instead of S · 2^S."""
        logits: dict[tuple[bool, ...], torch.Tensor] = {}

        def descend(s: int, h: torch.Tensor, prefix: tuple[bool, ...]) -> None:
            if s == self.num_stages:
                logits[prefix] = h
                return
            for stage_skipped in (False, True):
                descend(s + 1, self.step(s, h, stage_skipped), prefix + (stage_skipped,))

        descend(0, x, ())
        return logits

    def named_logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The two sub-networks trained explicitly: super (all run) and base (all skipped)."""
        return {"super": self(x, skip=(False,) * self.num_stages), "base": self(x, skip=(True,) * self.num_stages)}

    def blocks_with_position(self):
        """(stage index, block index, block) for every block."""
        for s, stage in enumerate(self.stages):
            for b, block in enumerate(stage):
                yield s, b, block
