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


@torch.no_grad()
def collect_probs(model: nn.Module, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax of every exit on every sample, (K, N, C), with labels (N,). Computed fresh, never cached."""
    was_training = model.training
    model.eval()
    probs, labels = [], []
    for images, y in batches:
        probs.append(torch.stack([z.float().softmax(dim=1) for z in model(images)]).cpu())
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


def find_thresholds(probs: torch.Tensor, shares: torch.Tensor) -> torch.Tensor:
    """The reference's greedy per-exit thresholds, vectorised: T_k is the confidence of the
    ⌊N·share_k⌋-th most confident sample at exit k among those not exited before k."""
    num_exits, n, _ = probs.shape
    confidence = probs.max(dim=2).values
    thresholds = torch.full((num_exits,), NO_EXIT, dtype=confidence.dtype)
    exited = torch.zeros(n, dtype=torch.bool)
    for k in range(num_exits - 1):
        target = int(np.floor(n * float(shares[k])))
        order = confidence[k].argsort(descending=True, stable=True)
        candidates = order[~exited[order]]
        if 1 <= target <= len(candidates):
            thresholds[k] = confidence[k, candidates[target - 1]]
        exited |= confidence[k] >= thresholds[k]
    thresholds[-1] = ALWAYS_EXIT
    return thresholds


def exit_points(probs: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Index of the first exit whose confidence reaches its threshold, per sample (ties exit)."""
    confidence = probs.max(dim=2).values
    passes = confidence >= thresholds[:, None].to(confidence.dtype)
    passes[-1] = True
    return passes.int().argmax(dim=0)


def apply_thresholds(probs: torch.Tensor, labels: torch.Tensor, thresholds: torch.Tensor,
                     costs: list[float]) -> tuple[float, float, list[int]]:
    """(accuracy %, expected cost, samples per exit) of exiting `probs` at `thresholds`."""
    exits = exit_points(probs, thresholds)
    predictions = probs.argmax(dim=2).gather(0, exits[None]).squeeze(0)
    counts = torch.bincount(exits, minlength=probs.shape[0])
    accuracy = 100 * float((predictions == labels).float().mean())
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
    points = []
    for p in p_values:
        q = p / 20
        thresholds = find_thresholds(val_probs, exit_shares(q, val_probs.shape[0]))
        accuracy, cost, counts = apply_thresholds(test_probs, test_labels, thresholds, costs)
        points.append(BudgetPoint(q, cost, accuracy, counts, thresholds.tolist()))
    return points


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
        confidence, predicted = logits.float().softmax(dim=1).max(dim=1)
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
