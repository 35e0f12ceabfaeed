"""The per-epoch learning-rate schedule (`optim.lr_step: epoch`) of the torchvision classification reference,
which the ADN recipes use: stepped once after every epoch. The per-iteration one is `trainer.lr_factor`."""
from __future__ import annotations

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, MultiStepLR, SequentialLR

from .config import RunConfig


def epoch_scheduler(cfg: RunConfig, optimizer: torch.optim.Optimizer) -> LRScheduler:
    """LinearLR from warmup_factor·lr over warmup_epochs, then CosineAnnealingLR(T_max = epochs − warm-up,
    eta_min = min_lr) or MultiStepLR (drops at the same absolute epochs as the per-iteration schedule)."""
    o, epochs = cfg.optim, cfg.train.epochs
    warmup = int(o.warmup_epochs)
    if o.schedule == "cosine":
        main = CosineAnnealingLR(optimizer, T_max=epochs - warmup, eta_min=o.min_lr)
    else:
        main = MultiStepLR(optimizer, [round(m * epochs) - warmup for m in o.milestones], gamma=o.gamma)
    if warmup == 0:
        return main
    ramp = LinearLR(optimizer, start_factor=o.warmup_factor, total_iters=warmup)
    return SequentialLR(optimizer, [ramp, main], milestones=[warmup])
