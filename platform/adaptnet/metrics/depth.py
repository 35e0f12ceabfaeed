"""Adaptive-depth evaluation helpers: Pareto front, best sub-network under a budget, ‖F(h)‖/‖h‖ per block."""
from __future__ import annotations

import torch

from ..models.skippable import SkippableDepthNet


def pareto_front(rows: list[dict], accuracy_key: str, cost_key: str = "macs") -> list[dict]:
    """Rows no other row beats on both counts (higher or equal accuracy at lower or equal cost, one strictly),
    cheapest first."""
    front = [r for r in rows if not any(
        o[accuracy_key] >= r[accuracy_key] and o[cost_key] <= r[cost_key]
        and (o[accuracy_key] > r[accuracy_key] or o[cost_key] < r[cost_key]) for o in rows)]
    return sorted(front, key=lambda r: r[cost_key])


def best_under_budget(rows: list[dict], budget: float, accuracy_key: str, cost_key: str = "macs") -> dict | None:
    """The most accurate row (by `accuracy_key`) costing at most `budget`; ties go to the cheaper row."""
    affordable = [r for r in rows if r[cost_key] <= budget]
    return max(affordable, key=lambda r: (r[accuracy_key], -r[cost_key])) if affordable else None


@torch.no_grad()
def residual_ratios(model: SkippableDepthNet, images: torch.Tensor, skip: tuple[bool, ...]) -> list[dict]:
    """‖F(h)‖₂/‖h‖₂ of every block with a shortcut that runs in sub-network `skip` (h = the shortcut path).
    Skippable blocks of a well distilled ADN sit well below mandatory ones (brief §3)."""
    was_training = model.training
    model.eval()
    rows = []
    hooks = []
    position = {id(block): (s, b) for s, b, block in model.blocks_with_position()}

    def record(block, inputs, output):
        h, stage_skipped = inputs
        branch, identity = block.residual(h, stage_skipped)
        if identity is None:  # no shortcut (MobileNetV2's width-changing blocks): no ratio to report
            return
        s, b = position[id(block)]
        ratio = (branch.flatten(1).norm(dim=1) / identity.flatten(1).norm(dim=1).clamp_min(1e-12)).mean()
        rows.append({"stage": s + 1, "block": b + 1, "skippable": block.skippable, "ratio": float(ratio)})

    for _, _, block in model.blocks_with_position():
        hooks.append(block.register_forward_hook(record))
    try:
        model(images, skip=skip)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return rows
