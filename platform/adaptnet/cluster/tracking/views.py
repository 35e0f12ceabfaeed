"""What makes a sweep readable in the MLflow UI: the parent's params describe the sweep (not one arm), the
paired comparison as a figure next to comparison.md at the top of the parent's artifacts, and every arm's
accuracy-vs-cost with intervals over seeds."""
from __future__ import annotations

import math
import re

from .store import client, flatten, metric_key


def sweep_params(spec) -> dict[str, str]:
    """The parent run's params: the sweep's shape (arms, seeds, grid or space, objectives, budgets) and the
    base config's values that no arm, grid key or search changes."""
    varied = {k for arm in spec.arms.values() for k in arm} | set((spec.grid or {}))
    varied |= {"train.seed", "data.holdout_seed"} if spec.grid and "seed" in spec.grid else set()
    params = {"sweep.name": spec.name, "sweep.kind": "grid" if spec.grid else "search",
              "sweep.trials": str(spec.trial_count()), "sweep.objectives": ", ".join(f"{o.metric} ({o.mode})"
                                                                                   for o in spec.objectives),
              "sweep.budgets": ",".join(f"{b:.6g}" for b in spec.budgets), "sweep.asha": str(spec.asha),
              "sweep.workers": str(spec.workers)}
    for key, values in (spec.grid or {}).items():
        params[f"sweep.grid.{key}"] = ",".join(map(str, values))
    for arm, overrides in spec.arms.items():
        params[f"sweep.arm.{arm}"] = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "(base)"
    if spec.space is not None:
        params["sweep.space"] = repr(spec.space)[:6000]
    base = {k: v for k, v in flatten(spec.base).items() if k not in varied and not k.startswith("name")}
    return {**params, **{f"base.{k}": v for k, v in base.items()}}


def accuracy_cost_points(metrics: dict, keep=lambda output: True) -> list[tuple[float, float]]:
    """(multiply-adds, test top-1) of each output in a trial's final metrics (exits, or every sub-network; those
    `keep` accepts)."""
    points = []
    for key, macs in metrics.items():
        found = re.fullmatch(r"final/macs_(exit\d+|[TF]+)", key)
        accuracy = metrics.get(f"final/test_top1_{found.group(1)}") if found and keep(found.group(1)) else None
        if accuracy is not None:
            points.append((float(macs), float(accuracy)))
    return points


def arm_color(index: int) -> str:
    """An arm's colour, by its place in the sweep's arms: the same in every figure of a sweep."""
    return f"C{index % 10}"


def comparison_figure(rows: list[dict], title: str, arms: list[str] | None = None):
    """Per metric (exit, budget): mean ± 95% CI of every arm (top) and the paired Δ vs the baseline with its
    CI (bottom, 0 marked). `arms`: the sweep's arms in order (their colours); default: as the rows list them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    arms = arms or list(dict.fromkeys(r["arm"] for r in rows))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6, 1.6 * len(metrics) + 2), 7), sharex=True)
    width = 0.8 / max(1, len(arms))
    for a, arm in enumerate(arms):
        xs, means, errs, dx, dmeans, derrs = [], [], [], [], [], []
        for m, metric in enumerate(metrics):
            row = next((r for r in rows if r["metric"] == metric and r["arm"] == arm), None)
            if row is None or row["interval"] is None:  # no seed has this metric (e.g. a budget off every curve)
                continue
            x = m + (a - (len(arms) - 1) / 2) * width
            xs.append(x), means.append(row["interval"].mean), errs.append(_half(row["interval"]))
            if row["diff"] is not None:
                dx.append(x), dmeans.append(row["diff"].mean), derrs.append(_half(row["diff"]))
        top.errorbar(xs, means, yerr=errs, fmt="o", capsize=4, label=arm, color=arm_color(a))
        if dx:
            bottom.errorbar(dx, dmeans, yerr=derrs, fmt="s", capsize=4, label=f"{arm} − baseline", color=arm_color(a))
    bottom.axhline(0, color="grey", lw=1, ls="--")
    top.set_ylabel("test top-1 (%): mean ± 95% CI")
    bottom.set_ylabel("paired Δ vs baseline (pp) ± 95% CI")
    bottom.set_xticks(range(len(metrics)), metrics, rotation=20)
    top.set_title(title)
    top.legend(fontsize=8)
    if bottom.lines:
        bottom.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _half(interval) -> float:
    return 0.0 if math.isnan(interval.half_width) else interval.half_width


def arm_cost_figure(result, arms: list[str], title: str, keep=lambda arm, output: True, references=()):
    """Every arm's accuracy-vs-cost: per output it trains (`keep`), the mean test top-1 over seeds ± 95% CI at its
    multiply-adds; `references`, (label, multiply-adds, top-1) of published numbers, as stars beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...metrics.plots import finish_cost_axes
    from ...metrics.stats import mean_ci

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for a, arm in enumerate(arms):
        per_seed = [sorted(accuracy_cost_points(t.metrics, lambda output: keep(arm, output)))  # noqa: B023
                    for t in result.finished() if t.params.get("arm") == arm]
        per_seed = [p for p in per_seed if p]
        if not per_seed:
            continue
        n_out = min(len(p) for p in per_seed)
        macs = [per_seed[0][k][0] / 1e6 for k in range(n_out)]
        intervals = [mean_ci([p[k][1] for p in per_seed]) for k in range(n_out)]
        ax.errorbar(macs, [i.mean for i in intervals], yerr=[_half(i) for i in intervals], marker="o", capsize=4,
                    label=f"{arm} (n={len(per_seed)})", color=arm_color(a))
    for label, macs, top1 in references:
        ax.plot([macs / 1e6], [top1], marker="*", markersize=12, color="black", linestyle="none")
        ax.annotate(label, (macs / 1e6, top1), fontsize=7, xytext=(4, 4), textcoords="offset points")
    finish_cost_axes(fig, ax, title, "test top-1 (%): mean ± 95% CI over seeds")
    return fig


def comparison_metrics(rows: list[dict], slugs: dict[str, str]) -> dict[str, float]:
    """The paired comparison as sortable, chartable metrics: per metric and arm `cmp/<metric>/<arm>/mean`,
    `ci_low`, `ci_high`, `n`, and against the baseline `delta`, `delta_ci_low`, `delta_ci_high`. `slugs` names
    each row's metric in keys (e.g. "@19.7M MACs" → budget1). Undefined bounds (one seed) are left out."""
    out = {}
    for row in rows:
        prefix = f"cmp/{slugs.get(row['metric'], row['metric'])}/{row['arm']}"
        for name, interval in (("", row["interval"]), ("delta_", row["diff"])):
            if interval is None:
                continue
            values = {"mean" if not name else "delta": interval.mean, f"{name}ci_low": interval.low,
                      f"{name}ci_high": interval.high}
            if not name:
                values["n"] = interval.n
            out.update({metric_key(f"{prefix}/{k}"): float(v) for k, v in values.items() if math.isfinite(v)})
    return out


VIEW_TAG = "mlflow.sharedViewState."  # + key: an experiment tag holding a runs-table view the UI opens by URL


def view_key(sweep: str) -> str:
    import hashlib

    return hashlib.sha256(sweep.encode()).hexdigest()[:16]


def save_arm_view(tracking_uri: str, experiment_id: str, sweep: str, columns: list[str]) -> str:
    """A saved runs-table view of one sweep: its runs grouped by arm (mean per group) with `columns` (metric
    keys) shown, stored on the experiment the way the UI's "Share" button stores one. Returns its key, which
    opens it at `#/experiments/<id>/runs?viewStateShareKey=<key>`."""
    import json

    from .runs import ARM_TAG, SWEEP_TAG

    key = view_key(sweep)
    state = {"searchFilter": f"tags.`{SWEEP_TAG}` = '{sweep}'" if "'" not in sweep else "",
             "orderByKey": "attributes.start_time", "orderByAsc": True,
             "selectedColumns": [f"tags.`{SWEEP_TAG}`"] + [f"metrics.`{c}`" for c in columns],
             "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": ARM_TAG}]},
             "runsHiddenMode": "SHOW_ALL", "useGroupedValuesInCharts": True}
    client(tracking_uri).set_experiment_tag(experiment_id, VIEW_TAG + key, json.dumps(state))
    return key


def log_comparison(tracking_uri: str, parent_id: str, rows: list[dict], markdown: str, result, arms: list[str],
                   slugs: dict[str, str], verdict: str, columns: list[str] = (), keep=lambda arm, output: True,
                   references=()) -> str:
    """comparison.md, comparison.png and accuracy_vs_cost.png at the top level of the parent's artifacts, the
    comparison as `cmp/...` metrics, the verdict as the parent run's description, and a saved view of the
    children grouped by arm with `columns`; returns that view's key."""
    import time

    import matplotlib.pyplot as plt
    from mlflow.entities import Metric

    mlflow = client(tracking_uri)
    mlflow.log_text(parent_id, markdown, "comparison.md")
    for name, fig in (("comparison.png", comparison_figure(rows, f"{result.name}: paired comparison", arms)),
                      ("accuracy_vs_cost.png", arm_cost_figure(result, arms, f"{result.name}: every arm", keep,
                                                               references))):
        mlflow.log_figure(parent_id, fig, name)
        plt.close(fig)
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in comparison_metrics(rows, slugs).items()]
    for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
        mlflow.log_batch(parent_id, metrics=metrics[start:start + 1000])
    mlflow.set_tag(parent_id, "mlflow.note.content", verdict)
    return save_arm_view(tracking_uri, mlflow.get_run(parent_id).info.experiment_id, result.name, list(columns))
