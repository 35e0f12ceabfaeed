"""A checkpoint → one self-contained bundle (plain tensors and Python, read back with weights_only=True) and
the runner that serves it: decode → preprocess → real early exit at a budget, or the static sub-network."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from ..metrics.adaptive import OperatingPoint, anytime_accuracy, calibrate, choose_point, collect_probs, early_exit_predict
from ..metrics.costs import exit_costs, subnet_costs
from ..models import SkippableDepthNet, model_entry
from . import DeployError
from .preprocess import batch, transform
from .subnet import extract_subnet, parse_skip

BUNDLE_VERSION = 1


def _normalization(data) -> tuple[list[float], list[float]]:
    """The run's mean/std on the 0–1 scale: in-memory batches keep them as tensors scaled by 255, streaming
    batches as the plain values they normalise uint8 batches with (`normalize_batch`)."""
    mean, std = data.test.mean, data.test.std
    if isinstance(mean, torch.Tensor):
        return (mean.flatten() / 255).tolist(), (std.flatten() / 255).tolist()
    return [float(v) for v in mean], [float(v) for v in std]


def build_bundle(checkpoint: str | Path, budgets: list[float] | None = None, skip: str | None = None,
                 device: str = "cpu", extra_card: dict | None = None, evaluated: dict | None = None) -> dict:
    """Everything a deployed model needs, computed fresh from the checkpoint and its held-out split.
    Multi-exit nets need `budgets` (the first is the default of a request; [] = the full net's cost), ADN nets
    `skip`. `evaluated`: this checkpoint's evaluation report (`evaluate_checkpoint`), when the caller has just
    made it: an ADN net's sub-network table, or a multi-exit net's calibration at the same budgets, is then taken
    from it instead of evaluated again."""
    from ..loop.evaluate import load_checkpoint_model, operating_points, subnet_report

    if (budgets is None) == (skip is None):
        raise DeployError("export: give --budget MACS (multi-exit nets) or --skip TTFF (ADN nets), not both")
    cfg, data, model = load_checkpoint_model(checkpoint, device)
    adn = isinstance(model, SkippableDepthNet)
    if adn and skip is None:
        raise DeployError(f"budget: {cfg.model.name} is an ADN net; export one sub-network with --skip")
    if not adn and skip is not None:
        raise DeployError(f"skip: {cfg.model.name} is a multi-exit net; give --budget")
    if data.holdout is None:
        raise DeployError(f"data.holdout: {str(checkpoint)!r} was trained without a held-out split (holdout=0), "
                          "so there is nothing to calibrate on")
    size = data.image_size
    mean, std = _normalization(data)
    card = {"run": cfg.name, "model": cfg.model.name, "technique": cfg.technique, "dataset": cfg.data.dataset,
            "classes": data.classes, "input_size": size, "checkpoint": str(checkpoint), **(extra_card or {})}
    common = {"version": BUNDLE_VERSION, "config": cfg.model_dump(), "classes": data.classes, "mean": mean, "std": std,
              "input_size": size, "transform": data.transform}
    if adn:
        flags = parse_skip(skip, model.num_stages)
        report = evaluated if _of_this(evaluated, checkpoint, "subnets") else subnet_report(cfg, data, model, [])
        subnet = extract_subnet(model, flags)
        cost = {c.skip: c for c in subnet_costs(model, size, model_entry(cfg.model.name).cost_convention)}[skip]
        card.update(kind="subnet", skip=skip, macs=cost.macs, params=cost.params, subnets=report["subnets"],
                    pareto_front=report["pareto_front"])
        return {**common, "kind": "subnet", "skip": skip, "state": _cpu(subnet.state_dict()), "card": card}
    costs = [c.macs for c in exit_costs(model, size)]
    budgets = [float(b) for b in budgets] or [float(costs[-1])]
    for budget in budgets:
        if budget < costs[0]:
            raise DeployError(f"budget: {budget:.6g} MACs per image is below the first exit's cost ({costs[0]:.6g})")
    if _of_this(evaluated, checkpoint, "calibration") and evaluated["budgeted"]["budgets"] == budgets:
        points, chosen = evaluated["calibration"], evaluated["budgeted"]["operating_points"]
        test, held = evaluated["anytime"], evaluated["holdout_anytime"]
    else:
        val_probs, val_labels = collect_probs(model, data.holdout)
        test_probs, test_labels = collect_probs(model, data.test)
        points = [asdict(p) for p in calibrate(val_probs, val_labels, costs)]
        chosen = operating_points(val_probs, val_labels, test_probs, test_labels, costs, budgets)
        test, held = anytime_accuracy(test_probs, test_labels), anytime_accuracy(val_probs, val_labels)
    card.update(kind="early_exit", default_budget=budgets[0], budgets=chosen,
                exits=[{"exit": k + 1, "macs": macs, "test_top1": test["top1"][k], "holdout_top1": held["top1"][k]}
                       for k, macs in enumerate(costs)])
    return {**common, "kind": "early_exit", "state": _cpu(model.state_dict()), "exit_macs": costs,
            "points": points, "budgets": list(budgets), "default_budget": budgets[0], "card": card}


def _of_this(evaluated: dict | None, checkpoint, key: str) -> bool:
    """Whether `evaluated` is an evaluation report of `checkpoint` that holds `key`."""
    return evaluated is not None and evaluated.get("checkpoint") == str(checkpoint) and key in evaluated


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu() for k, v in state.items()}


def save_bundle(bundle: dict, path: Path) -> Path:
    torch.save(bundle, path)
    return path


class Runner:
    """A loaded bundle: `predict(images, budget)` → per image class, label, exit (1-based) and its MACs."""

    def __init__(self, path: str | Path, device: str = "auto"):
        from ..loop.build import build_training
        from ..loop.config import RunConfig
        from ..loop.trainer import pick_device

        bundle = torch.load(path, map_location="cpu", weights_only=True)
        if bundle.get("version") != BUNDLE_VERSION:
            raise DeployError(f"bundle: {str(path)!r} has version {bundle.get('version')}, expected {BUNDLE_VERSION}")
        self.bundle, self.kind, self.classes = bundle, bundle["kind"], bundle["classes"]
        self.device = pick_device(device)
        cfg = RunConfig.model_validate(bundle["config"])
        model, _ = build_training(cfg, len(self.classes), load_pretrained=False)
        if self.kind == "subnet":
            model = extract_subnet(model, parse_skip(bundle["skip"], model.num_stages))
        model.load_state_dict(bundle["state"])
        self.model = model.to(self.device).eval()
        self.prepare = transform(bundle["transform"], cfg.data.augment, bundle["input_size"], bundle["mean"],
                                 bundle["std"])
        if self.kind == "early_exit":
            self.points = [OperatingPoint(**p) for p in bundle["points"]]
            self.exit_macs = bundle["exit_macs"]
        else:
            self.macs = bundle["card"]["macs"]

    def point(self, budget: float | None) -> OperatingPoint:
        budget = self.bundle["default_budget"] if budget is None else float(budget)
        try:
            return choose_point(self.points, budget)
        except ValueError as err:
            raise DeployError(str(err)) from None

    @torch.no_grad()
    def predict(self, images: list[bytes], budget: float | None = None) -> dict[str, list]:
        if self.kind == "early_exit":
            point = self.point(budget)  # checked before any decoding
        x = batch(images, self.prepare).to(self.device)
        if self.kind == "subnet":
            classes = self.model(x).argmax(dim=1).tolist()
            exits, macs = [1] * len(classes), [float(self.macs)] * len(classes)
        else:
            thresholds = torch.tensor(point.thresholds, dtype=torch.float32)
            predicted, exit_index = early_exit_predict(self.model, x, thresholds)
            classes, exits = predicted.tolist(), (exit_index + 1).tolist()
            macs = [float(self.exit_macs[e - 1]) for e in exits]
        return {"class": classes, "label": [self.classes[c] for c in classes], "exit": exits, "macs": macs}

