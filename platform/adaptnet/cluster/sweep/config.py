"""A sweep trial's config: the sweep's base config plus the trial's overrides, through the `adaptnet train`
schema (`arm` picks an arm's overrides, `seed` sets both seeds, `search.*` are helper samples)."""
from __future__ import annotations

import itertools
from typing import Any

from ...loop import RunConfig, build_config
from .spaces import config_overrides

SPECIAL_KEYS = ("arm", "seed")


def trial_overrides(params: dict[str, Any], arms: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A trial's Tune config → config overrides: the arm's overrides, the seed on both seeds, the rest as is."""
    overrides = dict(arms[params["arm"]]) if "arm" in params else {}
    if "seed" in params:
        overrides.update({"train.seed": params["seed"], "data.holdout_seed": params["seed"]})
    overrides.update({k: v for k, v in config_overrides(params).items() if k not in SPECIAL_KEYS})
    return overrides


def override_items(overrides: dict[str, Any]) -> list[str]:
    """{key: value} → the `section.key=value` strings of `adaptnet train` (values as YAML, so None stays null)."""
    import yaml

    return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
            for k, v in overrides.items()]


def trial_config(base: dict, overrides: dict[str, Any], name: str, output_dir: str) -> RunConfig:
    tree = {**base, "name": name, "output_dir": output_dir, "train": {**base["train"], "progress": False}}
    return build_config(tree, override_items(overrides))


def with_overrides(base: dict, overrides: dict[str, Any]) -> dict:
    """A base config tree with overrides applied and validated (still without a run name of its own)."""
    tree = trial_config(base, overrides, base.get("name", "sweep"), "runs").model_dump()
    tree.pop("output_dir")
    return tree


def grid_params(grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination of a grid's values, in Tune's grid order (the last key varies fastest)."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def trial_name(params: dict[str, Any], fallback: str) -> str:
    """`<arm>-s<seed>` for a trial of a paired grid, else `fallback` (its trial id)."""
    return f"{params['arm']}-s{params['seed']}" if {"arm", "seed"} <= set(params) else fallback
