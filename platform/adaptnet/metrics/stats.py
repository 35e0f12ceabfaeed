"""Seeded comparisons: mean ± Student-t confidence interval per arm and paired differences against a baseline.

Runs of different arms with the same seed share the held-out split and the data order, so the per-seed
difference removes the seed's own effect; its interval is the paired t interval of those differences.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import mean, stdev

from scipy.stats import t as student_t


@dataclass(frozen=True)
class Interval:
    mean: float
    half_width: float  # nan with fewer than two values
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def __str__(self) -> str:
        return f"{self.mean:.2f}" if math.isnan(self.half_width) else f"{self.mean:.2f} ± {self.half_width:.2f}"


def mean_ci(values: list[float], level: float = 0.95) -> Interval:
    """Mean and the half-width of its two-sided Student-t interval: t(1−(1−level)/2, n−1)·s/√n."""
    if not values:
        raise ValueError("mean_ci: no values")
    n = len(values)
    if n < 2:
        return Interval(values[0], float("nan"), 1)
    quantile = float(student_t.ppf(1 - (1 - level) / 2, n - 1))
    return Interval(mean(values), quantile * stdev(values) / math.sqrt(n), n)


def paired_difference(arm: dict[int, float], baseline: dict[int, float], level: float = 0.95) -> Interval:
    """Interval of arm − baseline over the seeds both have (keyed by seed)."""
    seeds = sorted(set(arm) & set(baseline))
    if not seeds:
        raise ValueError("paired_difference: the arm and the baseline share no seed")
    return mean_ci([arm[s] - baseline[s] for s in seeds], level)


def comparison_rows(results: dict[str, dict[int, dict[str, float]]], metrics: list[str], baseline: str,
                    level: float = 0.95) -> list[dict]:
    """One row per (metric, arm): mean ± CI over seeds and, for arms other than the baseline, the paired
    difference with its CI. `results[arm][seed][metric]` holds each run's value; missing values are skipped."""
    rows = []
    for metric in metrics:
        base = {s: r[metric] for s, r in results[baseline].items() if r.get(metric) is not None}
        for arm, by_seed in results.items():
            values = {s: r[metric] for s, r in by_seed.items() if r.get(metric) is not None}
            if not values:
                continue
            row = {"metric": metric, "arm": arm, "interval": mean_ci(list(values.values()), level), "diff": None}
            if arm != baseline and set(values) & set(base):
                row["diff"] = paired_difference(values, base, level)
            rows.append(row)
    return rows


def _cells(row: dict) -> list[str]:
    interval, diff = row["interval"], row["diff"]
    return [row["metric"], row["arm"], str(interval.n), str(interval), "" if diff is None else f"{diff.mean:+.2f}",
            "" if diff is None or math.isnan(diff.half_width) else f"[{diff.low:+.2f}, {diff.high:+.2f}]"]


HEADER = ["metric", "arm", "n", "mean ± 95% CI", "Δ vs baseline", "Δ 95% CI"]


def table_markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def table_text(rows: list[dict]) -> str:
    cells = [HEADER] + [_cells(row) for row in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    return "\n".join("  ".join(c[i].ljust(widths[i]) if i < 2 else c[i].rjust(widths[i]) for i in range(len(HEADER)))
                     for c in cells)


def table_csv_rows(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        interval, diff = row["interval"], row["diff"]
        out.append({"metric": row["metric"], "arm": row["arm"], "n": interval.n, "mean": interval.mean,
                    "ci_half_width": interval.half_width,
                    "diff_vs_baseline": None if diff is None else diff.mean,
                    "diff_ci_half_width": None if diff is None else diff.half_width})
    return out
