"""Accuracy-vs-cost plots (PNG) of one or several evaluated runs, overlaid."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_runs(results: list[dict], out_dir: str | Path) -> list[Path]:
    """Writes anytime.png and budgeted.png for `evaluate_checkpoint` results; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in ("anytime", "budgeted"):
        fig, ax = plt.subplots(figsize=(6, 4))
        for result in results:
            label = f"{result['run']} ({result['technique']})"
            if kind == "anytime":
                xs, ys = result["exit_macs"], result["anytime"]["top1"]
            else:
                points = sorted(result["budgeted"]["curve"], key=lambda p: p["cost"])
                xs, ys = [p["cost"] for p in points], [p["accuracy"] for p in points]
            ax.plot([x / 1e6 for x in xs], ys, marker="o", markersize=3, label=label)
        ax.set_xlabel("multiply-adds per image (M)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title("anytime prediction" if kind == "anytime" else "budgeted batch classification")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"{kind}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths
