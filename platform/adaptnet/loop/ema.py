"""Exponential moving average of the weights, as the torchvision classification reference (ADN brief §2.3).

An `AveragedModel` over parameters and buffers (`use_buffers=True`) with an EMA average, updated on every
`ema_steps`-th batch of an epoch (batches 0, k, 2k, …). Its nominal decay is rescaled so that it does not
depend on batch size and epochs: α = min(1, (1 − decay) · global_batch · ema_steps / epochs), decay' = 1 − α.
While epoch < warmup_epochs the average is reset after each update, i.e. it is a copy of the live weights.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .config import RunConfig


def effective_decay(decay: float, global_batch: int, ema_steps: int, epochs: int) -> float:
    """The reference's rescaled decay; `global_batch` = world size × batch per worker."""
    alpha = min(1.0, (1.0 - decay) * global_batch * ema_steps / epochs)
    return 1.0 - alpha


class ModelEMA:
    """The averaged copy of a model (`module`) and the reference's update rule; call `after_step` after
    every optimizer step."""

    def __init__(self, model: nn.Module, decay: float, ema_steps: int, warmup_epochs: float):
        self.decay, self.ema_steps, self.warmup_epochs = decay, ema_steps, warmup_epochs
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self._epoch, self._batch = None, 0

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    @torch.no_grad()
    def after_step(self, model: nn.Module, epoch: int) -> None:
        if epoch != self._epoch:  # batches are counted per epoch, as the reference's enumerate
            self._epoch, self._batch = epoch, 0
        if self._batch % self.ema_steps == 0:
            self.averaged.update_parameters(model)
            if epoch < self.warmup_epochs:
                self.averaged.n_averaged.fill_(0)  # the next update copies the live weights again
        self._batch += 1

    def state_dict(self) -> dict:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state)


def build_ema(cfg: RunConfig, model: nn.Module, global_batch: int) -> ModelEMA | None:
    """The run's EMA (None when `train.ema` is off), made from the model's current weights."""
    t = cfg.train
    if not t.ema:
        return None
    decay = effective_decay(t.ema_decay, global_batch, t.ema_steps, t.epochs)
    return ModelEMA(model, decay, t.ema_steps, cfg.optim.warmup_epochs)


def eval_weights(saved: dict) -> dict:
    """The weights a checkpoint is evaluated with: its EMA's when it has one, else the live model's."""
    ema = saved.get("model_ema")
    if ema is None:
        return saved["model"]
    return {key.removeprefix("module."): value for key, value in ema.items() if key.startswith("module.")}
