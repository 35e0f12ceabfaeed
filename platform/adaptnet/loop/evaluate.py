"""Anytime and budgeted evaluation of a saved checkpoint (recomputed every time: logits are never cached)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from ..data import DataError, Prepared, prepare_data
from ..metrics.costs import exit_costs, skip_string, subnet_costs
from ..metrics.depth import best_under_budget, pareto_front, residual_ratios
from ..models import SkippableDepthNet, model_entry
from ..metrics.adaptive import (accuracy_at_budgets, anytime_accuracy, apply_thresholds, budgeted_curve, calibrate,
                                choose_point, collect_probs, confidences, curve_area, exit_points, point_as_dict)
from .build import build_training
from .checkpoint import CheckpointError, load_checkpoint
from .config import RunConfig
from .ema import eval_weights
from .preflight import saved_config
from .trainer import Distributed, evaluate, pick_device


def load_checkpoint_model(path: str | Path, device: str = "auto", dist: Distributed | None = None):
    """(config, prepared data, model with the checkpoint's evaluation weights) of a run's checkpoint. With `dist`,
    rank 0's checkpoint is shared with every rank and each rank gets its shard of the held-out and test splits."""
    dist = dist or Distributed()
    if dist.world_size > 1:  # only rank 0 has the file on a multi-node run
        path, saved = str(path), dist.broadcast_object(load_checkpoint(path) if dist.is_main else None)
        cfg = RunConfig.model_validate(saved["config"])
    else:
        saved, cfg = saved_config(path)
    dev = dist.device or pick_device(device)
    data = prepare_data(cfg.data, cfg.train.batch_size, cfg.train.eval_batch_size, cfg.train.seed,
                        saved_split=saved["split"], rank=dist.rank, world_size=dist.world_size, device=dev,
                        loader="torch" if cfg.data.loader == "ray" else None)  # no Ray Data here
    model, _ = build_training(cfg, data.num_classes, load_pretrained=False)
    try:
        model.load_state_dict(eval_weights(saved))  # the EMA's weights when the run kept one
    except RuntimeError:  # torch's message lists every mismatched tensor
        raise CheckpointError(f"checkpoint: {str(path)!r}: its weights do not fit {cfg.model.name} "
                              f"{cfg.model.args or ''} (the model its config names)") from None
    return cfg, data, model.to(dev).eval()


def shards_evaluation(cfg: RunConfig) -> bool:
    """Whether the run's final evaluation can be split over ranks: the sub-network table of an adaptive-depth
    net is accuracy sums (added over ranks); a multi-exit net's thresholds need every image's probabilities."""
    return issubclass(model_entry(cfg.model.name).builder, SkippableDepthNet)


def evaluate_checkpoint(path: str | Path, budgets: list[float] = (), device: str = "auto",
                        predictions: bool = False, dist: Distributed | None = None) -> dict:
    """The report of `adaptnet evaluate`: per exit and budgeted for multi-exit nets, per sub-network for ADN.
    `predictions` adds, for multi-exit nets, every test image's class and exit at each budget. With `dist`
    (every rank calls it; `shards_evaluation` must hold), each rank evaluates its shard and all get the report."""
    cfg, data, model = load_checkpoint_model(path, device, dist)
    header = {"checkpoint": str(path), "run": cfg.name, "model": cfg.model.name, "technique": cfg.technique}
    if data.holdout is None:
        raise DataError("data.holdout: thresholds and sub-network selection need held-out images (holdout=0)")
    if isinstance(model, SkippableDepthNet):
        return {**header, **subnet_report(cfg, data, model, list(budgets), dist.all_reduce_sum if dist else None)}
    if dist and dist.world_size > 1:
        raise ValueError("evaluate_checkpoint: a multi-exit net is evaluated by one process (see shards_evaluation)")
    return {**header, **exit_report(cfg, data, model, list(budgets), predictions)}


def operating_points(val_probs, val_labels, test_probs, test_labels, costs: list[float], budgets: list[float],
                     predictions: bool = False) -> list[dict | None]:
    """Per budget, the deployable setting chosen on the held-out split (see `calibrate`/`choose_point`; None
    below the first exit's cost) with what it gives on test; what `adaptnet export` ships."""
    points = calibrate(val_probs, val_labels, costs)
    confidence, predicted = confidences(test_probs)
    out = []
    for budget in budgets:
        try:
            point = choose_point(points, budget)
        except ValueError:
            out.append(None)
            continue
        thresholds = torch.tensor(point.thresholds, dtype=confidence.dtype)
        accuracy, cost, counts = apply_thresholds(confidence, predicted, test_labels, thresholds, costs)
        entry = {"budget": budget, **asdict(point), "test_cost": cost, "test_accuracy": accuracy,
                 "test_exit_counts": counts}
        if predictions:
            exits = exit_points(confidence, thresholds)
            entry["test_exits"] = exits.tolist()
            entry["test_predictions"] = predicted.gather(0, exits[None]).squeeze(0).tolist()
        out.append(entry)
    return out


def exit_report(cfg: RunConfig, data: Prepared, model, budgets: list[float], predictions: bool = False) -> dict:
    costs = [c.macs for c in exit_costs(model, data.image_size)]
    val_probs, val_labels = collect_probs(model, data.holdout)
    test_probs, test_labels = collect_probs(model, data.test)
    curve = budgeted_curve(val_probs, test_probs, test_labels, costs)
    return {
        "exit_macs": costs,
        "anytime": anytime_accuracy(test_probs, test_labels),
        "holdout_anytime": anytime_accuracy(val_probs, val_labels),
        "calibration": [asdict(p) for p in calibrate(val_probs, val_labels, costs)],  # what an export ships
        "budgeted": {
            "curve": [point_as_dict(p) for p in curve],
            "area": curve_area(curve),
            "budgets": list(budgets),
            "accuracy_at_budgets": accuracy_at_budgets(curve, budgets),
            "operating_points": operating_points(val_probs, val_labels, test_probs, test_labels, costs, budgets,
                                                 predictions),
        },
    }


def subnet_report(cfg: RunConfig, data: Prepared, model: SkippableDepthNet, budgets: list[float],
                  all_reduce_sum=None) -> dict:
    """Every one of the 2^S sub-networks on held-out and test data; the front and the per-budget choice are
    made on the held-out split and reported on test. With `all_reduce_sum`, `data` holds this rank's shards."""
    convention = model_entry(cfg.model.name).cost_convention
    costs = {c.skip: c for c in subnet_costs(model, data.image_size, convention)}
    configs = model.skip_configs()

    def every_subnet(images):
        return {skip_string(skip): logits for skip, logits in model.subnet_logits(images).items()}

    held, test = (evaluate(model, batches, every_subnet, all_reduce_sum) for batches in (data.holdout, data.test))
    rows = [{"skip": name, "macs": cost.macs, "params": cost.params, "holdout_top1": held[f"top1_{name}"],
             "test_top1": test[f"top1_{name}"], "test_top5": test[f"top5_{name}"]} for name, cost in costs.items()]
    probe = next(iter(data.holdout))[0][:64]
    return {
        "subnets": rows,
        "pareto_front": [r["skip"] for r in pareto_front(rows, "holdout_top1")],
        "budgets": [{"budget": b, "choice": best_under_budget(rows, b, "holdout_top1")} for b in budgets],
        "residual_ratios": {name: residual_ratios(model, probe, skip)
                            for name, skip in (("super", configs[0]), ("base", configs[-1]))},
    }


def summary_metrics(report: dict) -> dict[str, float]:
    """An evaluation report as flat `final/...` metrics whose keys are the same for every run of a model
    family, so that runs compare side by side: per exit (or per sub-network, with `super`/`base` aliases)
    test and held-out top-1 and cost, the budgeted curve's area and the accuracy at each budget."""
    out: dict[str, float] = {}
    if "subnets" in report:
        rows = report["subnets"]
        named = {row["skip"]: row for row in rows} | {"super": rows[0], "base": rows[-1]}
        for name, row in named.items():
            out.update({f"final/test_top1_{name}": row["test_top1"], f"final/holdout_top1_{name}": row["holdout_top1"],
                        f"final/macs_{name}": row["macs"]})
        for i, entry in enumerate(report["budgets"], 1):
            if entry["choice"]:
                out.update({f"final/budget{i}_test_top1": entry["choice"]["test_top1"],
                            f"final/budget{i}_macs": entry["choice"]["macs"]})
        outputs = ("super", "base")
    else:
        outputs = tuple(f"exit{k + 1}" for k in range(len(report["exit_macs"])))
        for k, name in enumerate(outputs):
            out.update({f"final/test_top1_{name}": report["anytime"]["top1"][k],
                        f"final/test_top5_{name}": report["anytime"]["top5"][k],
                        f"final/holdout_top1_{name}": report["holdout_anytime"]["top1"][k],
                        f"final/macs_{name}": report["exit_macs"][k]})
        budgeted = report["budgeted"]
        out["final/budgeted_area"] = budgeted["area"]
        for i, (budget, accuracy) in enumerate(zip(budgeted["budgets"], budgeted["accuracy_at_budgets"]), 1):
            out[f"final/budget{i}_macs"] = budget
            if accuracy is not None:
                out[f"final/budget{i}_test_top1"] = accuracy
    for split in ("test", "holdout"):
        out[f"final/{split}_top1_mean"] = sum(out[f"final/{split}_top1_{n}"] for n in outputs) / len(outputs)
    return {k: float(v) for k, v in out.items()}


def write_predictions(results: list[dict], path: str | Path) -> Path:
    """CSV of every test image's class and exit (1-based) at each budget of multi-exit reports."""
    import csv

    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["run", "budget", "index", "class", "exit"])
        for result in results:
            for entry in result.get("budgeted", {}).get("operating_points", []):
                for i, (c, e) in enumerate(zip(entry["test_predictions"], entry["test_exits"]) if entry else ()):
                    writer.writerow([result["run"], entry["budget"], i, c, e + 1])
    return Path(path)
