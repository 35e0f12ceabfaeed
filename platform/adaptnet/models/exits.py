"""What every multi-exit backbone shares: the block → exit-head loop and Gradient Equilibrium (IMTA §2)."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

GEScope = Literal["coarsest", "all"]


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by a constant."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.factor, None


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    return _ScaleGrad.apply(x, factor)


def name_exits(logits: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """exit1, exit2, …: how per-exit outputs are named in losses, metrics and reports."""
    return {f"exit{k + 1}": z for k, z in enumerate(logits)}


class MultiExitNet(nn.Module):
    """Backbone of `blocks` with one exit head after each; subclasses fill both ModuleLists.

    A block maps the running state (a tensor, or a list of per-scale tensors) to the next state; a head
    maps a state to (logits, pooled feature) and reads only its last tensor.

    Gradient Equilibrium, with K exits and 1-indexed exit k: the state entering head k is scaled by
    1/(K−k+1) in backward and the onward state by K−k on top, so every block receives the mean, not the
    sum, of the gradients of the exits downstream. `ge_scope="coarsest"` rescales only the tensor the
    heads read (the official code); `"all"` rescales every scale, which makes the mean exact everywhere.
    """

    blocks: nn.ModuleList
    heads: nn.ModuleList

    def __init__(self, ge_scope: GEScope | None = None):
        super().__init__()
        if ge_scope not in (None, "coarsest", "all"):
            raise ValueError(f"ge_scope: must be None, 'coarsest' or 'all', got {ge_scope!r}")
        self.ge_scope = ge_scope

    @property
    def num_exits(self) -> int:
        return len(self.heads)

    @property
    def primary_output(self) -> str:
        """The output model selection reads: the last exit."""
        return f"exit{self.num_exits}"

    def named_logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return name_exits(self(x))

    def _rescale(self, state, factor: float):
        if self.ge_scope is None:
            return state
        if isinstance(state, torch.Tensor):
            return scale_grad(state, factor)
        if self.ge_scope == "coarsest":
            return [*state[:-1], scale_grad(state[-1], factor)]
        return [scale_grad(t, factor) for t in state]

    def forward(self, x: torch.Tensor, return_features: bool = False):
        num_exits = self.num_exits
        logits, features = [], []
        for i, (block, head) in enumerate(zip(self.blocks, self.heads)):
            x = self._rescale(block(x), 1.0 / (num_exits - i))
            z, f = head(x)
            logits.append(z)
            features.append(f)
            x = self._rescale(x, float(num_exits - i - 1))
        return (logits, features) if return_features else logits

    def exit_stream(self, x: torch.Tensor):
        """Inference, one exit at a time: yields (logits, feature) of exit k, then receives the row indices
        of the samples that go on (None: all), so exited samples cost nothing in later blocks."""
        state = x
        for block, head in zip(self.blocks, self.heads):
            state = block(state)
            keep = yield head(state)
            if keep is not None:
                state = state[keep] if isinstance(state, torch.Tensor) else [t[keep] for t in state]
