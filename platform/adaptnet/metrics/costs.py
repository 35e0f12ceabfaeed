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
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

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


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """flop_counter has formulas for the CUDA attention kernels, not for the CPU flash kernel."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_EXTRA_FORMULAS = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_attention_flops


class _Meter:
    """Counts multiply-adds and the parameters of modules that ran, while active; `read()` any time."""

    def __init__(self, model: nn.Module, convention: Convention):
        if convention not in ("reference", "torchvision"):
            raise ValueError(f"convention: must be 'reference' or 'torchvision', got {convention!r}")
        self.model, self.convention = model, convention
        self.extra_ops = 0
        self.params = 0
        self.seen: set[int] = set()
        self.counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)

    def _on_module(self, module, inputs, output):
        if id(module) not in self.seen:  # a module's own parameters count once, however often it runs
            self.seen.add(id(module))
            self.params += sum(p.numel() for p in module.parameters(recurse=False))
        if self.convention == "reference":
            self.extra_ops += _reference_extra_ops(module, inputs, output)

    def read(self) -> tuple[int, int]:
        """(multiply-adds, parameters) so far; flop_counter counts a multiply-add as 2 FLOPs."""
        return int(self.counter.get_total_flops() // 2 + self.extra_ops), int(self.params)

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        self.handles = [m.register_forward_hook(self._on_module) for m in self.model.modules()]
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()
        self.counter.__enter__()
        return self

    def __exit__(self, *exc):
        self.counter.__exit__(*exc)
        self.no_grad.__exit__(*exc)
        for h in self.handles:
            h.remove()
        self.model.train(self.was_training)
        return False


def _zero_image(model: nn.Module, input_size: int) -> torch.Tensor:
    return torch.zeros(1, 3, input_size, input_size, device=next(model.parameters()).device)


def exit_costs(model: nn.Module, input_size: int = 32, convention: Convention = "reference") -> list[ExitCost]:
    """Runs one zero image through `model.exit_stream` (see MultiExitNet) and returns cumulative costs."""
    snapshots = []
    with _Meter(model, convention) as meter:
        # exit_stream runs block k then exit k, so each snapshot holds what exit k really costs.
        for k, _ in enumerate(model.exit_stream(_zero_image(model, input_size))):
            macs, params = meter.read()
            snapshots.append(ExitCost(exit=k + 1, macs=macs, params=params))
    return snapshots


@dataclass(frozen=True)
class SubnetCost:
    skip: str      # one letter per stage: T = skippable sub-path skipped, F = run
    macs: int
    params: int


def skip_string(skip: tuple[bool, ...]) -> str:
    return "".join("T" if s else "F" for s in skip)


def subnet_costs(model: nn.Module, input_size: int = 224, convention: Convention = "torchvision") -> list[SubnetCost]:
    """Cost of each of the 2^S sub-networks of a skippable-depth model (see `skip_configs`)."""
    costs = []
    for skip in model.skip_configs():
        with _Meter(model, convention) as meter:
            model(_zero_image(model, input_size), skip=skip)
            macs, params = meter.read()
        costs.append(SubnetCost(skip_string(skip), macs, params))
    return costs


def costs_report(model_name: str, model: nn.Module, input_size: int, convention: Convention) -> dict:
    """`adaptnet costs` output: cumulative cost per exit, or cost per sub-network."""
    report = {"model": model_name, "input_size": input_size, "convention": convention}
    if hasattr(model, "skip_configs"):
        return {**report, "configs": [asdict(c) for c in subnet_costs(model, input_size, convention)]}
    return {**report, "exits": [asdict(c) for c in exit_costs(model, input_size, convention)]}
