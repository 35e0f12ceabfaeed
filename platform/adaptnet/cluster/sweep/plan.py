"""`--dry-run` of a sweep script: the trials, their stages and epochs, the stages trained once and shared, the
workers and GPUs per trial, and the compute (GPU-hours, on-demand USD). Nothing starts, nothing is written."""
from __future__ import annotations

import json
from functools import lru_cache

from ...loop import RunConfig, stage_configs
from ...metrics.compute import StageCost, cost_lines
from ...metrics.costs import costs_report
from ...metrics.references import IMAGENET_TRAIN
from ...models import create_model, model_entry
from .config import grid_params, trial_config, trial_name, trial_overrides
from .spec import SweepSpec
from .stage_share import stage_key

CIFAR_SIZES = {"cifar100": 50_000, "cifar10": 50_000}  # training images (cifar100 first: it starts with cifar10)
NOWHERE = "/adaptnet-dry-run"  # a run directory that is never created: stage keys only need it to differ


def train_images(cfg: RunConfig) -> tuple[int, str]:
    """(training images per epoch, where the count comes from) without reading the dataset, which a paper
    preset names but this machine may not reach."""
    data = cfg.data
    name = data.dataset.rstrip("/").rsplit("/", 1)[-1].lower()
    known = next((n for key, n in CIFAR_SIZES.items() if name.startswith(key)), None)
    if known is None and model_entry(cfg.model.name).num_classes == 1000:
        known, source = IMAGENET_TRAIN, "ImageNet-1k's training images"
    elif known is None:
        return (data.train_subset or 0), "data.train_subset (the dataset is not inspected)"
    else:
        source = f"{name.split('-')[0]}'s training images"
    full = known - data.holdout
    return (min(full, data.train_subset), "data.train_subset") if data.train_subset else (full, f"{source} less the held-out")


@lru_cache(maxsize=None)
def cheapest_and_full(name: str, args: str, size: int) -> tuple[float, float]:
    """(cheapest, full) forward multiply-adds of a model config (`args` as sorted JSON) at `size`: its first exit
    or base-net, and the whole net; counted once per process (a forward per sub-network of a ViT-b/16 is seconds)."""
    entry = model_entry(name)
    rows = costs_report(name, create_model(name, **json.loads(args)), size, entry.cost_convention)
    macs = sorted(r["macs"] for r in rows.get("exits") or rows["configs"])
    return macs[0], macs[-1]


def _forward_macs(cfg: RunConfig) -> float:
    """Forward multiply-adds per trained image over every pass of one step (a frozen teacher's forward counts
    a third of a trained pass: no backward)."""
    entry = model_entry(cfg.model.name)
    size = cfg.data.augment.train_crop if entry.input_size > 64 else entry.input_size
    base, full = cheapest_and_full(cfg.model.name, json.dumps(cfg.model.args, sort_keys=True), size)
    return {"adn_distill": full + base, "depth_kd": (base if cfg.adn.depth == "base" else full) + full / 3,
            "single_depth": base if cfg.adn.depth == "base" else full,
            "imta_stage2": full / 3 * (1 if cfg.imta.freeze_backbone else 3)}.get(cfg.technique, full)


def sweep_plan_lines(spec: SweepSpec, preset: str) -> list[str]:
    params = grid_params(spec.grid) if spec.grid else [{}] * spec.num_samples
    trials = [stage_configs(trial_config(spec.base, trial_overrides(p, spec.arms), trial_name(p, f"trial{i}"),
                                         f"{NOWHERE}/{i}")) for i, p in enumerate(params)]
    counted: dict[str, RunConfig] = {}
    for i, stages in enumerate(trials):
        for j, stage in enumerate(stages):
            shared = spec.grid and spec.share_stages and spec.workers == 1  # as the driver shares (driver.py)
            key = stage_key(stage) if shared else None
            counted[key or f"{i}/{j}"] = stage  # a shared stage is trained (and paid) once
    epochs = sum(s.train.epochs for stages in trials for s in stages)
    trained_epochs = sum(s.train.epochs for s in counted.values())
    images, source = train_images(next(iter(counted.values())))
    gpus = spec.workers * spec.gpus_per_worker
    lines = [f"[{spec.name}] dry run of preset {preset}: nothing starts, nothing is written",
             f"trials: {len(trials)}" + (f" ({', '.join(sorted({k for p in params for k in p}))} grid)" if spec.grid
                                          else " (search samples; ASHA may stop some early)" if spec.asha else ""),
             f"stages: {sum(map(len, trials))}, of which {len(counted)} are trained and the rest shared "
             f"({trained_epochs} of {epochs} stage-epochs)",
             f"per trial: {spec.workers} worker(s) × {spec.cpus_per_worker:g} CPUs"
             + (f" × {spec.gpus_per_worker:g} GPU" if spec.gpus_per_worker else "") + f"; {images:,} training images "
             f"per epoch ({source})"]
    if not gpus:
        return lines + ["compute: a CPU preset (no GPUs asked for): 0 GPU-hours, 0 USD on GPU instances"]
    costs = [StageCost(images * s.train.epochs, _forward_macs(s), s.train.amp) for s in counted.values()]
    return lines + cost_lines(costs, gpus)
