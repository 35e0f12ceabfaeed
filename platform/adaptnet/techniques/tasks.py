from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..models.exits import name_exits
from .imta import IMTANet, KDReduction, kd_loss

ExitWeights = Union[str, Sequence[float]]


Backward = Callable[[torch.Tensor], None]


@dataclass
class TaskOutput:
    losses: dict[str, torch.Tensor]   # named and weighted, for logging (already back-propagated)
    outputs: dict[str, torch.Tensor]  # named logits (exit1.., or super/base) for training accuracy


class Task(Protocol):
    """One training step's forward passes: calls `backward(loss)` once per pass (the loop's backward
    handles AMP scaling), and returns what it computed. The loop zeroes gradients before and steps after.
    `labels` are class indices (N,) or soft targets (N×C, rows summing to 1; MixUp/CutMix): every CE term
    takes both, and label smoothing applies to the CE terms only, never to KD.
    `find_unused_parameters`: some trainable parameters get no gradient in a pass (DDP must be told)."""

    find_unused_parameters: bool

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, backward: Backward) -> TaskOutput: ...


def plain_backward(loss: torch.Tensor) -> None:
    loss.backward()


def without_sync(model: nn.Module) -> contextlib.AbstractContextManager:
    """Around a forward pass that is not the optimizer step's last: under DDP its gradients stay local and are
    all-reduced with the last pass's (one all-reduce per step; DDP decides this in the forward, so the context
    holds the forward, the backward may follow outside). A plain module has nothing to sync."""
    return model.no_sync() if hasattr(model, "no_sync") else contextlib.nullcontext()


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

    def __init__(self, weights: ExitWeights, num_exits: int, label_smoothing: float = 0.0):
        self.weights = exit_weight_vector(weights, num_exits)
        self.label_smoothing = label_smoothing
        self.find_unused_parameters = 0.0 in self.weights  # an exit without loss leaves its head gradient-free

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 backward: Backward = plain_backward) -> TaskOutput:
        logits = model(images)
        losses = {
            f"ce_exit{k + 1}": w * F.cross_entropy(z, labels, label_smoothing=self.label_smoothing)
            for k, (w, z) in enumerate(zip(self.weights, logits)) if w != 0
        }
        backward(sum(losses.values()))
        return TaskOutput(losses, name_exits(logits))


class OneForAllKD:
    """IMTA stage-2 loss over the ISC exits: the last exit gets CE; exits 1..K−1 get
    (1−γ)·CE + γ·T²·KL(teacher ‖ exit). The teacher is the backbone's last exit (`stage1`, the official
    frozen stage-1 network) or the ISC last exit of the same forward pass (`live`, the joint variant);
    it is detached either way.
    """

    find_unused_parameters = True  # the backbone's own exit classifiers feed no loss

    def __init__(self, temperature: float, gamma: float, reduction: KDReduction = "official", teacher: str = "stage1",
                 label_smoothing: float = 0.0):
        if teacher not in ("stage1", "live"):
            raise ValueError(f"teacher: must be 'stage1' or 'live', got {teacher!r}")
        self.temperature, self.gamma, self.reduction, self.teacher = temperature, gamma, reduction, teacher
        self.label_smoothing = label_smoothing

    def __call__(self, model: IMTANet, images: torch.Tensor, labels: torch.Tensor,
                 backward: Backward = plain_backward) -> TaskOutput:
        logits, backbone_logits = model(images, return_backbone=True)  # through forward: DDP-safe
        teacher = backbone_logits[-1] if self.teacher == "stage1" else logits[-1]
        last = len(logits)
        ce = lambda z: F.cross_entropy(z, labels, label_smoothing=self.label_smoothing)  # noqa: E731
        losses = {f"ce_exit{last}": ce(logits[-1])}
        for k, z in enumerate(logits[:-1], start=1):
            losses[f"ce_exit{k}"] = (1 - self.gamma) * ce(z)
            losses[f"kd_exit{k}"] = self.gamma * kd_loss(z, teacher, self.temperature, self.reduction)
        backward(sum(losses.values()))
        return TaskOutput(losses, name_exits(logits))
