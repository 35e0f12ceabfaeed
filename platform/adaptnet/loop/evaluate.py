"""Anytime and budgeted evaluation of a saved checkpoint (recomputed every time: logits are never cached)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..data import DataError, prepare_data
from ..metrics import exit_costs
from ..metrics.adaptive import accuracy_at_budgets, anytime_accuracy, budgeted_curve, collect_probs, curve_area, point_as_dict
from .build import build_training
from .config import RunConfig
from .trainer import pick_device


def load_checkpoint_model(path: str | Path, device: str = "auto"):
    """(config, prepared data, model with the checkpoint's weights) of a run's checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint: {str(path)!r} does not exist")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    cfg = RunConfig.model_validate(saved["config"])
    dev = pick_device(device)
    data = prepare_data(cfg.data, cfg.train.batch_size, cfg.train.eval_batch_size, cfg.train.seed,
                        saved_split=saved["split"], device=dev)
    model, _ = build_training(cfg, data.num_classes, load_pretrained=False)
    model.load_state_dict(saved["model"])
    return cfg, data, model.to(dev).eval()


def evaluate_checkpoint(path: str | Path, budgets: list[float] = (), device: str = "auto") -> dict:
    cfg, data, model = load_checkpoint_model(path, device)
    if data.holdout is None:
        raise DataError("data.holdout: budgeted evaluation needs held-out images to calibrate thresholds (holdout=0)")
    costs = [c.macs for c in exit_costs(model, data.test.images.shape[-1])]
    val_probs, _ = collect_probs(model, data.holdout)
    test_probs, test_labels = collect_probs(model, data.test)
    curve = budgeted_curve(val_probs, test_probs, test_labels, costs)
    return {
        "checkpoint": str(path),
        "run": cfg.name,
        "model": cfg.model.name,
        "technique": cfg.technique,
        "exit_macs": costs,
        "anytime": anytime_accuracy(test_probs, test_labels),
        "budgeted": {
            "curve": [point_as_dict(p) for p in curve],
            "area": curve_area(curve),
            "budgets": list(budgets),
            "accuracy_at_budgets": accuracy_at_budgets(curve, list(budgets)),
        },
    }
