"""A timm-style registry of named model configs."""
from __future__ import annotations

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


def create_model(name: str, num_classes: int | None = None, **overrides) -> nn.Module:
    """Builds the named config; `overrides` replace any constructor argument of the config."""
    entry = model_entry(name)
    kwargs = {**entry.kwargs, **overrides}
    return entry.builder(num_classes=num_classes or entry.num_classes, **kwargs)
