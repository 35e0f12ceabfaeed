"""Per-exit cumulative cost (multiply-adds and parameters) of a multi-exit network.

Matrix work (every convolution and matmul, in any layer, known or not) is counted by
`torch.utils.flop_counter` at the aten level, so unfamiliar modules never crash the count.
The `reference` convention of the MSDNet counter (IMTA brief §1.4) adds, through module hooks,
ReLU elements, pooling windows and Linear biases; BatchNorm is free. `torchvision` keeps only
conv + linear multiply-adds. `ptflops` (the pytorch backend of ptflops, whose MobileNetV2 figure, 0.32 G
against torchvision's 0.30 G, the ADN paper prints) adds 2 ops per element of an affine norm layer (1 if not
affine), 1 per element of ReLU-family activations, pooling inputs, and conv/linear biases. Exit k's cost is read when exit k's logits are out, so it includes the
backbone up to block k and every earlier head (no lazy pruning), as in the reference.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.modules.pooling import _AdaptiveAvgPoolNd, _AvgPoolNd, _MaxPoolNd
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

Convention = Literal["reference", "torchvision", "ptflops"]
CONVENTIONS = ("reference", "torchvision", "ptflops")
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU)


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


def _ptflops_extra_ops(module: nn.Module, inputs, output) -> int:
    """What ptflops's pytorch backend adds to conv/linear multiply-adds."""
    if isinstance(module, _NORMS):
        affine = getattr(module, "affine", False) or getattr(module, "elementwise_affine", False)
        return output.numel() * (2 if affine else 1)
    if isinstance(module, _ACTIVATIONS):
        return output.numel()
    if isinstance(module, (_AvgPoolNd, _MaxPoolNd, _AdaptiveAvgPoolNd)):
        return inputs[0].numel()
    if isinstance(module, (nn.Linear, nn.Conv2d)) and module.bias is not None:
        return output.numel()
    return 0


_EXTRA_OPS = {"reference": _reference_extra_ops, "ptflops": _ptflops_extra_ops}


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """flop_counter has formulas for the CUDA attention kernels, not for the CPU flash kernel."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_EXTRA_FORMULAS = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_attention_flops


class _UsedParameters(TorchFunctionMode):
    """Records every parameter that an op receives, so a parameter counts when it takes part in the
    computation, also when a parent module uses it functionally (torchvision's Swin attention
    calls F.linear on its children's weights) and whatever the number of times it is used."""

    def __init__(self):
        super().__init__()
        self.numel: dict[int, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for leaf in tree_leaves((args, kwargs)):
            if isinstance(leaf, nn.Parameter):
                self.numel[id(leaf)] = leaf.numel()
        return func(*args, **kwargs)


class _Meter:
    """Counts multiply-adds and the parameters that took part, while active; `read()` any time."""

    def __init__(self, model: nn.Module, convention: Convention):
        if convention not in CONVENTIONS:
            raise ValueError(f"convention: must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
        self.model, self.convention = model, convention
        self.extra_ops = 0
        self.used = _UsedParameters()
        self.counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)

    def _on_module(self, module, inputs, output):
        self.extra_ops += _EXTRA_OPS[self.convention](module, inputs, output)

    def read(self) -> tuple[int, int]:
        """(multiply-adds, parameters) so far; flop_counter counts a multiply-add as 2 FLOPs."""
        return int(self.counter.get_total_flops() // 2 + self.extra_ops), sum(self.used.numel.values())

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        modules = self.model.modules() if self.convention in _EXTRA_OPS else ()
        self.handles = [m.register_forward_hook(self._on_module) for m in modules]
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()
        self.counter.__enter__()
        self.used.__enter__()
        return self

    def __exit__(self, *exc):
        self.used.__exit__(*exc)
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
