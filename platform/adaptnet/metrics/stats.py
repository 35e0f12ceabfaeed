"""Seeded comparisons: mean ± Student-t confidence interval per arm and paired differences against a baseline.

Runs of different arms with the same seed share the held-out split and the data order, so the per-seed
difference removes the seed's own effect; its interval is the paired t interval of those differences.

Detectable difference: the smallest mean paired difference these seeds would call significant at 95%
(two-sided), from the observed spread of the differences: t(0.975, n−1)·s_d/√n (the paired interval's
half-width). A true difference of that size is found only half the time; 80% power needs
(t(0.975, n−1) + t(0.8, n−1))·s_d/√n. Seeds needed for an effect δ: the smallest n with t(0.975, n−1)·s_d/√n ≤ δ.
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
    sd: float = float("nan")  # sample standard deviation of the values

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
    return Interval(mean(values), quantile * stdev(values) / math.sqrt(n), n, stdev(values))


def seeds_needed(sd: float, effect: float, level: float = 0.95, most: int = 1000) -> int | None:
    """The fewest paired seeds whose detectable difference t(level, n−1)·sd/√n is at most `effect`
    (None beyond `most`, or when sd is unknown)."""
    if math.isnan(sd) or effect <= 0:
        return None
    if sd == 0:
        return 2
    for n in range(2, most + 1):
        if float(student_t.ppf(1 - (1 - level) / 2, n - 1)) * sd / math.sqrt(n) <= effect:
            return n
    return None


def paired_difference(arm: dict[int, float], baseline: dict[int, float], level: float = 0.95) -> Interval:
    """Interval of arm − baseline over the seeds both have (keyed by seed)."""
    seeds = sorted(set(arm) & set(baseline))
    if not seeds:
        raise ValueError("paired_difference: the arm and the baseline share no seed")
    return mean_ci([arm[s] - baseline[s] for s in seeds], level)


def comparison_rows(results: dict[str, dict[int, dict[str, float]]], metrics: list[str], baseline: str,
                    level: float = 0.95, seeds: list[int] | None = None, reason=None) -> list[dict]:
    """One row per (metric, arm): mean ± CI over seeds and, for arms other than the baseline, the paired
    difference with its CI. `results[arm][seed][metric]` holds each run's value. A seed without a value is
    never dropped silently: the row's `missing` maps it to `reason(arm, seed, metric)` (default: "no value");
    `seeds` are the seeds every arm should have (default: all seeds of any arm)."""
    expected = sorted(seeds if seeds is not None else {s for by_seed in results.values() for s in by_seed})
    reason = reason or (lambda arm, seed, metric: "no value")
    rows = []
    for metric in metrics:
        base = {s: r[metric] for s, r in results[baseline].items() if r.get(metric) is not None}
        for arm, by_seed in results.items():
            values = {s: r[metric] for s, r in by_seed.items() if r.get(metric) is not None}
            missing = {s: reason(arm, s, metric) for s in expected if s not in values}
            row = {"metric": metric, "arm": arm, "interval": mean_ci(list(values.values()), level) if values else None,
                   "diff": None, "missing": missing, "expected": len(expected), "unpaired": []}
            if arm != baseline and set(values) & set(base):
                row["diff"] = paired_difference(values, base, level)
                row["unpaired"] = sorted(set(values) - set(base))  # seeds whose baseline run has no value
            rows.append(row)
    return rows


def row_notes(rows: list[dict]) -> list[str]:
    """Why a row has fewer seeds than the sweep, one line per row."""
    notes = []
    for row in rows:
        if row["missing"] or row["unpaired"]:
            why = "; ".join(f"seed {s}: {r}" for s, r in row["missing"].items())
            if row["unpaired"]:
                why += ("; " if why else "") + f"Δ without seed(s) {', '.join(map(str, row['unpaired']))} (no baseline value)"
            n = row["interval"].n if row["interval"] else 0
            notes.append(f"* {row['metric']}, {row['arm']}: {n} of {row['expected']} seeds: {why}")
    return notes


def verdict(rows: list[dict], baseline: str, effect: float = 1.0, level: float = 0.95,
            scale_hint: str = "") -> str:
    """A plain statement: which arms differ from the baseline (their paired interval excludes 0), how small a
    difference these seeds could detect, and how many seeds would detect `effect` points at this spread."""
    compared = [r for r in rows if r["diff"] is not None and not math.isnan(r["diff"].half_width)]
    if not compared:
        return "No paired comparison: every arm needs at least 2 seeds with values, paired with the baseline's."
    differ = [r for r in compared if r["diff"].low > 0 or r["diff"].high < 0]
    n = max(r["diff"].n for r in compared)
    widths = sorted(r["diff"].half_width for r in compared)
    lines = []
    if differ:
        lines.append("Differs from the baseline at 95%: " + "; ".join(
            f"{r['arm']} on {r['metric']} (Δ {r['diff'].mean:+.2f} [{r['diff'].low:+.2f}, {r['diff'].high:+.2f}])" for r in differ)
            + f". {len(compared) - len(differ)} other comparisons do not.")
    else:
        lines.append(f"No arm differs from {baseline} at 95% on any metric with {n} paired seeds.")
    lines.append(f"These seeds could detect only paired differences of {widths[0]:.2f} to {widths[-1]:.2f} points "
                 f"(t(0.975, n−1)·s_d/√n).")
    needed = [seeds_needed(r["diff"].sd, effect, level) for r in compared]
    known = [k for k in needed if k is not None]
    hint = f"; {scale_hint}" if scale_hint else ""
    if known:
        lines.append(f"Detecting {effect:g} point at this spread would take {min(known)} to {max(known)} paired seeds"
                     + (f" ({sum(k is None for k in needed)} comparisons: over 1000)" if None in needed else "") + hint + ".")
    else:
        lines.append(f"Detecting {effect:g} point at this spread would take over 1000 paired seeds{hint}.")
    return "\n".join(lines)


def _cells(row: dict) -> list[str]:
    interval, diff = row["interval"], row["diff"]
    n = interval.n if interval else 0
    shown_n = f"{n}" if not (row["missing"] or row["unpaired"]) else f"{n}/{row['expected']}*"
    ci = "" if diff is None or math.isnan(diff.half_width) else f"[{diff.low:+.2f}, {diff.high:+.2f}]"
    return [row["metric"], row["arm"], shown_n, "-" if interval is None else str(interval),
            "" if diff is None else f"{diff.mean:+.2f}", ci,
            "" if diff is None or math.isnan(diff.half_width) else f"{diff.half_width:.2f}"]


HEADER = ["metric", "arm", "n", "mean ± 95% CI", "Δ vs baseline", "Δ 95% CI", "detectable |Δ|"]


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured Markdown table; pipes inside cells are escaped and line breaks folded, so every line
    has as many cells as the header."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def table_markdown(rows: list[dict]) -> str:
    return markdown_table(HEADER, [_cells(row) for row in rows])


def table_text(rows: list[dict]) -> str:
    cells = [HEADER] + [_cells(row) for row in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    return "\n".join("  ".join(c[i].ljust(widths[i]) if i < 2 else c[i].rjust(widths[i]) for i in range(len(HEADER)))
                     for c in cells)


def table_csv_rows(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        interval, diff = row["interval"], row["diff"]
        out.append({"metric": row["metric"], "arm": row["arm"], "n": interval.n if interval else 0,
                    "expected_n": row["expected"], "mean": interval.mean if interval else None,
                    "ci_half_width": interval.half_width if interval else None,
                    "diff_vs_baseline": None if diff is None else diff.mean,
                    "diff_ci_half_width": None if diff is None else diff.half_width,
                    "detectable_diff": None if diff is None else diff.half_width,
                    "missing": "; ".join(f"seed {s}: {r}" for s, r in row["missing"].items())})
    return out
