"""Accuracy-vs-cost plots (PNG) of one or several evaluated runs, overlaid."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_runs(results: list[dict], out_dir: str | Path) -> list[Path]:
    """Writes the plots of `evaluate_checkpoint` results (several runs overlaid); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    exits = [r for r in results if "exit_macs" in r]
    subnets = [r for r in results if "subnets" in r]
    return (_plot_exits(exits, out) if exits else []) + ([_plot_subnets(subnets, out)] if subnets else [])


def _plot_subnets(results: list[dict], out: Path) -> Path:
    """Test top-1 of every sub-network against its cost, the held-out Pareto front joined by a line."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for result in results:
        rows = {r["skip"]: r for r in result["subnets"]}
        dots = ax.scatter([r["macs"] / 1e6 for r in rows.values()], [r["test_top1"] for r in rows.values()], s=14,
                          label=f"{result['run']} ({result['model']})")
        front = [rows[s] for s in result["pareto_front"]]
        ax.plot([r["macs"] / 1e6 for r in front], [r["test_top1"] for r in front], color=dots.get_facecolor()[0])
        for r in (front[0], front[-1]):
            ax.annotate(r["skip"], (r["macs"] / 1e6, r["test_top1"]), fontsize=7)
    return _save(fig, ax, "sub-networks (line: held-out Pareto front)", out / "subnets.png")


def finish_cost_axes(fig, ax, title: str, ylabel: str = "top-1 accuracy (%)") -> None:
    """Labels, grid and legend of an accuracy-vs-multiply-adds plot."""
    ax.set_xlabel("multiply-adds per image (M)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()


def _save(fig, ax, title: str, path: Path) -> Path:
    finish_cost_axes(fig, ax, title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_exits(results: list[dict], out: Path) -> list[Path]:
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
        title = "anytime prediction" if kind == "anytime" else "budgeted batch classification"
        paths.append(_save(fig, ax, title, out / f"{kind}.png"))
    return paths


def plot_accuracy_cost(rows: list[dict], title: str, path: Path) -> Path:
    """One run's test top-1 per named output (exits, or super/base) against its multiply-adds."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["macs"] / 1e6 for r in rows], [r["test_top1"] for r in rows], marker="o", label="test top-1")
    for r in rows:
        ax.annotate(r["output"], (r["macs"] / 1e6, r["test_top1"]), fontsize=7)
    return _save(fig, ax, title, path)


def plot_series(series: dict[str, list[tuple[float, float]]], title: str, path: Path) -> Path:
    """Several labelled accuracy-vs-cost lines overlaid: (multiply-adds, top-1 %) points per label."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in series.items():
        points = sorted(points)
        ax.plot([m / 1e6 for m, _ in points], [a for _, a in points], marker="o", label=label)
    return _save(fig, ax, title, Path(path))
