"""Batch-level recipe pieces of the training step (ADN brief §2.3): MixUp/CutMix with soft targets and
gradient clipping. The EMA is in `ema.py`, label smoothing in the tasks' CE terms."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.transforms import v2

from .config import RunConfig


class BatchMix:
    """MixUp and/or CutMix of a whole training batch (torchvision `transforms.v2`); with both on, one of the
    two is picked per batch (`v2.RandomChoice`, as the torchvision reference). Targets become soft (N×C, rows
    summing to 1). The draws come from a stream seeded by (seed, epoch), apart from the global RNG, so an
    epoch mixes the same way whether the run went straight through or resumed."""

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, seed: int = 0):
        choices = ([v2.MixUp(alpha=mixup_alpha, num_classes=num_classes)] if mixup_alpha > 0 else []) + \
                  ([v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes)] if cutmix_alpha > 0 else [])
        self.transform = v2.RandomChoice(choices) if choices else None
        self.seed = seed
        self._epoch, self._rng_state = None, None

    @classmethod
    def from_config(cls, cfg: RunConfig, num_classes: int) -> "BatchMix":
        return cls(num_classes, cfg.train.mixup_alpha, cfg.train.cutmix_alpha, cfg.train.seed)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transform is None:
            return images, labels
        if epoch != self._epoch:
            self._epoch = epoch
            self._rng_state = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch).get_state()
        with torch.random.fork_rng(devices=[]):  # v2 draws lam, box and choice from the CPU generator
            torch.set_rng_state(self._rng_state)
            images, labels = self.transform(images, labels)
            self._rng_state = torch.get_rng_state()
        return images, labels


def hard_labels(labels: torch.Tensor) -> torch.Tensor:
    """Class indices of (possibly soft) targets: train accuracy with MixUp/CutMix uses the target's argmax."""
    return labels.argmax(1) if labels.ndim == 2 else labels


def clip_gradients(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   max_norm: float | None) -> torch.Tensor | None:
    """Clips the total gradient norm (of the α-scaled sum of all the task's backward passes) to `max_norm`,
    after unscaling AMP gradients so the bound is in true units; returns the norm before clipping."""
    if max_norm is None:
        return None
    scaler.unscale_(optimizer)  # a no-op without a float16 GradScaler; scaler.step will not unscale again
    return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
