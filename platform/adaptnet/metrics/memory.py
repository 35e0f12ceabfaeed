"""Training memory per GPU, estimated before launch on any device: activations from one measured training
forward at a small batch (the bytes autograd keeps for backward), plus weights, gradients and optimizer state.
An estimate to size `train.accumulate_steps`, not a measurement of a GPU (bench/gpu_check.py measures one)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

CUDA_CONTEXT_BYTES = 1.5e9   # CUDA context, cuDNN/cuBLAS workspaces, allocator reserve (typical)
FRAGMENTATION = 1.2          # caching-allocator overhead over the live activation bytes
AMP_ACTIVATIONS = 0.6        # saved activations under float16/bfloat16 autocast (norms keep float32 inputs)
HEADROOM = 0.9               # of the GPU's memory a plan may use


def saved_bytes_per_image(model: nn.Module, image_size: int, batch: int = 2) -> float:
    """Bytes autograd saves for backward per image in one training forward of `model` (float32)."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()  # a storage saved twice counts once
        return tensor

    was_training = model.training
    model.train()
    images = torch.randn(batch, 3, image_size, image_size)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(images)
    model.train(was_training)
    return sum(seen.values()) / batch


@dataclass(frozen=True)
class MemoryPlan:
    per_image: float          # activation bytes per image (float32)
    static: float             # weights, gradients, optimizer state (and an EMA copy)
    amp: bool

    def at(self, micro_batch: int) -> float:
        activations = micro_batch * self.per_image * (AMP_ACTIVATIONS if self.amp else 1.0) * FRAGMENTATION
        return activations + self.static + CUDA_CONTEXT_BYTES

    def accumulation(self, per_worker_batch: int, gpu_bytes: float) -> int | None:
        """The fewest micro-batches (a divisor of the per-worker batch) whose estimate fits the GPU; None if
        not even one image a pass fits."""
        for steps in range(1, per_worker_batch + 1):
            if per_worker_batch % steps == 0 and self.at(per_worker_batch // steps) <= HEADROOM * gpu_bytes:
                return steps
        return None


def static_bytes(model: nn.Module, optimizer: str, ema: bool) -> float:
    """Weights, gradients, optimizer state (SGD momentum; Adam's two moments) and an EMA copy."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return params * (2 + {"sgd": 1, "adamw": 2}.get(optimizer, 2) + (1 if ema else 0))


def gb(value: float) -> str:
    return f"{value / 1e9:.1f} GB" if value >= 1e9 else f"{math.ceil(value / 1e6)} MB"
