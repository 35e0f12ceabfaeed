"""A timm-style registry of named model configs."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    num_classes: int          # default class count of the dataset the config was designed for
    input_size: int           # default square input resolution
    cost_convention: str      # the convention its paper's cost numbers use (see metrics.costs)
    kwargs: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, builder: Callable[..., nn.Module], *, num_classes: int, input_size: int,
                   cost_convention: str = "reference", **kwargs) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelEntry(name, builder, num_classes, input_size, cost_convention, kwargs)


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"model: unknown model {name!r}; known: {', '.join(list_models())}") from None


MAX_ARG = 100_000  # no size argument of any family comes near it
MAX_ITEMS = 64     # items in a list argument (stages, per-stage settings)


def _numbers(value: Any, depth: int = 0):
    """The numbers in an argument value (lists nested ≤ 3 deep), refusing long or deep lists on the way."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, (list, tuple)):
        if len(value) > MAX_ITEMS or depth >= 3:
            raise ValueError(f"a list of at most {MAX_ITEMS} items, nested at most 3 deep")
        for item in value:
            yield from _numbers(item, depth + 1)


def check_model_args(name: str, args: dict[str, Any]) -> None:
    """Arguments against the family's declared ranges (`ARG_LIMITS` on its class), before anything is built:
    finite numbers, short lists, size values no larger than the family builds. Raises ValueError("<arg>: …")."""
    limits = getattr(model_entry(name).builder, "ARG_LIMITS", {})
    for key, value in args.items():
        limit = limits.get(key, MAX_ARG)
        try:
            numbers = list(_numbers(value))
        except ValueError as err:
            raise ValueError(f"{key}: expected {err}") from None
        for number in numbers:
            if not math.isfinite(number) or abs(number) > limit:
                raise ValueError(f"{key}: {number!r} is beyond {limit}, the largest value {name} is built with")


def create_model(name: str, num_classes: int | None = None, **overrides) -> nn.Module:
    """Builds the named config; `overrides` replace any constructor argument of the config."""
    entry = model_entry(name)
    kwargs = {**entry.kwargs, **overrides}
    return entry.builder(num_classes=num_classes or entry.num_classes, **kwargs)
