"""Per-exit cumulative cost (multiply-adds and parameters) of a multi-exit network.

Matrix work (every convolution and matmul, in any layer, known or not) is counted by
`torch.utils.flop_counter` at the aten level, so unfamiliar modules never crash the count.
The `reference` convention of the MSDNet counter (IMTA brief §1.4) adds, through module hooks,
ReLU elements, pooling windows and Linear biases; BatchNorm is free. `torchvision` keeps only
conv + linear multiply-adds. Exit k's cost is read when exit k's logits are out, so it includes the
backbone up to block k and every earlier head (no lazy pruning), as in the reference.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.modules.pooling import _AdaptiveAvgPoolNd, _AvgPoolNd, _MaxPoolNd
from torch.utils.flop_counter import FlopCounterMode

Convention = Literal["reference", "torchvision"]


@dataclass(frozen=True)
class ExitCost:
    exit: int
    macs: int
    params: int


def _reference_extra_ops(module: nn.Module, inputs, output) -> int:
    """Elementwise and pooling ops the reference counter adds on top of matrix multiply-adds."""
    if isinstance(module, nn.ReLU):
        return inputs[0].numel()
    if isinstance(module, (_AvgPoolNd, _MaxPoolNd)):
        k = module.kernel_size
        window = k * k if isinstance(k, int) else int(torch.tensor(k).prod())
        return output.numel() * window
    if isinstance(module, _AdaptiveAvgPoolNd):
        return inputs[0].numel()
    if isinstance(module, nn.Linear) and module.bias is not None:
        return output.numel()
    return 0


@torch.no_grad()
def exit_costs(model: nn.Module, input_size: int = 32, convention: Convention = "reference") -> list[ExitCost]:
    """Runs one zero image through `model.exit_stream` (see MultiExitNet) and returns cumulative costs."""
    if convention not in ("reference", "torchvision"):
        raise ValueError(f"convention: must be 'reference' or 'torchvision', got {convention!r}")
    was_training = model.training
    model.eval()
    extra_ops = 0
    seen: set[int] = set()
    params = 0
    snapshots: list[ExitCost] = []
    counter = FlopCounterMode(display=False)

    def on_module(module, inputs, output):
        nonlocal extra_ops, params
        if id(module) not in seen:  # a module's own parameters count once, however often it runs
            seen.add(id(module))
            params += sum(p.numel() for p in module.parameters(recurse=False))
        if convention == "reference":
            extra_ops += _reference_extra_ops(module, inputs, output)

    handles = [m.register_forward_hook(on_module) for m in model.modules()]
    try:
        device = next(model.parameters()).device
        with counter:
            # exit_stream runs block k then exit k, so each snapshot holds what exit k really costs.
            for k, _ in enumerate(model.exit_stream(torch.zeros(1, 3, input_size, input_size, device=device))):
                macs = counter.get_total_flops() // 2 + extra_ops  # flop_counter counts a multiply-add as 2
                snapshots.append(ExitCost(exit=k + 1, macs=int(macs), params=int(params)))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return snapshots


def costs_as_dict(model_name: str, costs: list[ExitCost], **extra) -> dict:
    return {"model": model_name, **extra, "exits": [asdict(c) for c in costs]}
