from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

ExitWeights = Union[str, Sequence[float]]


@dataclass
class TaskOutput:
    losses: dict[str, torch.Tensor]   # named, already weighted; the loop back-propagates their sum
    logits: list[torch.Tensor]        # one per exit, for per-exit training accuracy


class Task(Protocol):
    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> TaskOutput: ...


def exit_weight_vector(weights: ExitWeights, num_exits: int) -> list[float]:
    """`equal` → all 1 (the papers' plain sum), `linear` → k/K, or an explicit list checked for length K."""
    if weights == "equal":
        return [1.0] * num_exits
    if weights == "linear":
        return [(k + 1) / num_exits for k in range(num_exits)]
    if isinstance(weights, str):
        raise ValueError(f"exit_weights: unknown scheme {weights!r} (equal, linear, or a list)")
    weights = [float(w) for w in weights]
    if len(weights) != num_exits:
        raise ValueError(f"exit_weights: expected {num_exits} weights, got {len(weights)}")
    if any(w < 0 for w in weights) or sum(weights) == 0:
        raise ValueError(f"exit_weights: must be non-negative and not all zero, got {weights}")
    return weights


class MultiExitCE:
    """Σ_k w_k · CE(z_k, y), reported per exit as `ce_exit{k}`."""

    def __init__(self, weights: ExitWeights, num_exits: int):
        self.weights = exit_weight_vector(weights, num_exits)

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> TaskOutput:
        logits = model(images)
        losses = {
            f"ce_exit{k + 1}": w * F.cross_entropy(z, labels)
            for k, (w, z) in enumerate(zip(self.weights, logits)) if w != 0
        }
        return TaskOutput(losses, logits)
