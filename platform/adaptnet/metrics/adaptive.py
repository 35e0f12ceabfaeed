"""Adaptive-inference evaluation (IMTA brief §6): anytime accuracy per exit and budgeted batch
classification as the official `dynamic_evaluate`, plus early exit that really skips computation.

Budgeted protocol: confidence = max softmax; for q = p/20, p = 1..40, exit shares ∝ q^k; thresholds are
found greedily on the held-out split (the share of not-yet-exited samples, ties exit, last threshold −∞);
the test set exits at the first k with confidence ≥ T_k; cost = Σ_k share_k · cumulative cost_k.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

NO_EXIT = 1e8      # threshold when a share cannot be met: nobody exits there (as the reference)
ALWAYS_EXIT = -1e8  # the last exit's threshold


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax in at least float32 (AMP logits may be half), in float64 for float64 models."""
    return logits.softmax(dim=1) if logits.dtype == torch.float64 else logits.float().softmax(dim=1)


@torch.no_grad()
def collect_probs(model: nn.Module, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax of every exit on every sample, (K, N, C), with labels (N,). Computed fresh, never cached."""
    was_training = model.training
    model.eval()
    probs, labels = [], []
    for images, y in batches:
        probs.append(torch.stack([softmax(z) for z in model(images)]).cpu())
        labels.append(y.cpu())
    model.train(was_training)
    return torch.cat(probs, dim=1), torch.cat(labels)


def anytime_accuracy(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, list[float]]:
    """Top-1 / top-5 (%) of each exit."""
    k5 = min(5, probs.shape[2])
    top = probs.topk(k5, dim=2).indices                # K, N, k5
    hits = top.eq(labels[None, :, None])
    return {"top1": (100 * hits[:, :, 0].float().mean(1)).tolist(),
            "top5": (100 * hits.any(2).float().mean(1)).tolist()}


def exit_shares(q: float, num_exits: int) -> torch.Tensor:
    """Geometric exit distribution: share_k ∝ q^k, k = 1..K."""
    powers = torch.tensor(q, dtype=torch.float64) ** torch.arange(1, num_exits + 1, dtype=torch.float64)
    return powers / powers.sum()


def confidences(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(max softmax, its class) per exit and sample, each (K, N): all the budgeted protocol reads."""
    confidence, predictions = probs.max(dim=2)
    return confidence, predictions


def find_thresholds(confidence: torch.Tensor, shares: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
    """The reference's greedy per-exit thresholds, vectorised: T_k is the confidence of the
    ⌊N·share_k⌋-th most confident sample at exit k among those not exited before k.
    `order` (each exit's samples by falling confidence) may be passed in to reuse it across budgets."""
    num_exits, n = confidence.shape
    if order is None:
        order = confidence.argsort(dim=1, descending=True, stable=True)
    conf, order = confidence.numpy(), order.numpy()  # numpy: these small ops are ~10× cheaper per call
    thresholds = np.full(num_exits, NO_EXIT, dtype=conf.dtype)
    exited = np.zeros(n, dtype=bool)
    for k in range(num_exits - 1):
        target = int(np.floor(n * float(shares[k])))
        still_in = np.cumsum(~exited[order[k]])  # rank among the samples that have not exited yet
        if 1 <= target <= still_in[-1]:
            thresholds[k] = conf[k, order[k][np.searchsorted(still_in, target)]]
        exited |= conf[k] >= thresholds[k]
    thresholds[-1] = ALWAYS_EXIT
    return torch.from_numpy(thresholds)


def exit_points(confidence: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Index of the first exit whose confidence reaches its threshold, per sample (ties exit)."""
    passes = confidence >= thresholds[:, None].to(confidence.dtype)
    passes[-1] = True
    return passes.int().argmax(dim=0)


def apply_thresholds(confidence: torch.Tensor, predictions: torch.Tensor, labels: torch.Tensor,
                     thresholds: torch.Tensor, costs: list[float]) -> tuple[float, float, list[int]]:
    """(accuracy %, expected cost, samples per exit) of exiting at `thresholds`."""
    exits = exit_points(confidence, thresholds)
    predicted = predictions.gather(0, exits[None]).squeeze(0)
    counts = torch.bincount(exits, minlength=confidence.shape[0])
    accuracy = 100 * float((predicted == labels).float().mean())
    expected = float((counts.double() / len(labels) * torch.tensor(costs, dtype=torch.float64)).sum())
    return accuracy, expected, counts.tolist()


@dataclass
class BudgetPoint:
    q: float
    cost: float
    accuracy: float
    exit_counts: list[int]
    thresholds: list[float]


def budgeted_curve(val_probs, test_probs, test_labels, costs: list[float], p_values=range(1, 41)) -> list[BudgetPoint]:
    """The (expected cost, accuracy) curve over q = p/20, thresholds from `val_probs`."""
    val_confidence, _ = confidences(val_probs)
    order = val_confidence.argsort(dim=1, descending=True, stable=True)
    test_confidence, test_predictions = confidences(test_probs)
    points = []
    for p in p_values:
        q = p / 20
        thresholds = find_thresholds(val_confidence, exit_shares(q, len(costs)), order)
        accuracy, cost, counts = apply_thresholds(test_confidence, test_predictions, test_labels, thresholds, costs)
        points.append(BudgetPoint(q, cost, accuracy, counts, thresholds.tolist()))
    return points


@dataclass
class OperatingPoint:
    """A deployable budget setting: per-exit thresholds with the expected cost and accuracy they give on the
    held-out split they were calibrated on (q = None: the two ends, everyone at exit 1 / at the last exit)."""
    q: float | None
    thresholds: list[float]
    holdout_cost: float
    holdout_accuracy: float
    holdout_exit_counts: list[int]


def calibrate(val_probs: torch.Tensor, val_labels: torch.Tensor, costs: list[float],
              p_values=range(1, 41)) -> list[OperatingPoint]:
    """The official q grid's thresholds (as `budgeted_curve`) plus both ends, each with its held-out cost."""
    confidence, predictions = confidences(val_probs)
    order = confidence.argsort(dim=1, descending=True, stable=True)
    k = len(costs)
    settings = [(None, torch.full((k,), ALWAYS_EXIT, dtype=confidence.dtype))]
    settings += [(p / 20, find_thresholds(confidence, exit_shares(p / 20, k), order)) for p in p_values]
    settings += [(None, torch.tensor([NO_EXIT] * (k - 1) + [ALWAYS_EXIT], dtype=confidence.dtype))]
    points = []
    for q, thresholds in settings:
        accuracy, cost, counts = apply_thresholds(confidence, predictions, val_labels, thresholds, costs)
        points.append(OperatingPoint(q, thresholds.tolist(), cost, accuracy, counts))
    return points


def choose_point(points: list[OperatingPoint], budget: float) -> OperatingPoint:
    """The most accurate (held-out) point whose held-out expected cost fits `budget`; ties go to the cheaper.
    A budget below the cheapest point (everyone at exit 1) is a ValueError naming it."""
    affordable = [p for p in points if p.holdout_cost <= budget]
    if not affordable:
        cheapest = min(p.holdout_cost for p in points)
        raise ValueError(f"budget: {budget:.6g} MACs per image is below the first exit's cost ({cheapest:.6g})")
    return max(affordable, key=lambda p: (p.holdout_accuracy, -p.holdout_cost))


def _sorted_curve(points: list[BudgetPoint]) -> tuple[np.ndarray, np.ndarray]:
    costs = np.array([p.cost for p in points])
    order = np.argsort(costs, kind="stable")
    return costs[order], np.array([p.accuracy for p in points])[order]


def curve_area(points: list[BudgetPoint]) -> float:
    """Mean accuracy (%) over the curve's cost range: trapezoid area divided by the range's width."""
    costs, accuracy = _sorted_curve(points)
    width = costs[-1] - costs[0]
    if width <= 0:
        return float(accuracy.mean())
    return float(np.sum((accuracy[1:] + accuracy[:-1]) / 2 * np.diff(costs)) / width)


def accuracy_at_budgets(points: list[BudgetPoint], budgets: list[float]) -> list[float | None]:
    """Accuracy interpolated at each budget; None outside the curve's cost range."""
    costs, accuracy = _sorted_curve(points)
    return [float(np.interp(b, costs, accuracy)) if costs[0] <= b <= costs[-1] else None for b in budgets]


@torch.no_grad()
def early_exit_predict(model: nn.Module, images: torch.Tensor, thresholds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Real early exit: samples whose confidence reaches exit k's threshold leave the batch there and
    the later blocks run only on the rest. Returns (predictions, exit index) per sample."""
    model.eval()
    n = images.shape[0]
    predictions = torch.empty(n, dtype=torch.long, device=images.device)
    exits = torch.empty(n, dtype=torch.long, device=images.device)
    remaining = torch.arange(n, device=images.device)
    stream = model.exit_stream(images)
    logits, _ = next(stream)
    num_exits = len(thresholds)
    for k in range(num_exits):
        confidence, predicted = softmax(logits).max(dim=1)
        leave = confidence >= float(thresholds[k]) if k < num_exits - 1 else torch.ones_like(confidence, dtype=torch.bool)
        predictions[remaining[leave]] = predicted[leave]
        exits[remaining[leave]] = k
        stay = (~leave).nonzero().squeeze(1)
        remaining = remaining[stay]
        if len(remaining) == 0:
            break
        logits, _ = stream.send(stay)
    stream.close()
    return predictions, exits


def point_as_dict(point: BudgetPoint) -> dict:
    return asdict(point)
