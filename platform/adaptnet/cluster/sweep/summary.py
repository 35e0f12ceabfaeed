"""What a sweep leaves in its MLflow parent run: the trials table (CSV + Markdown), the accuracy-vs-cost
overlay of the best trials, the Pareto front of multi-objective sweeps and the best trial's config."""
from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import yaml

from ...metrics.stats import markdown_table
from ..tracking.views import accuracy_cost_points
from .spec import SweepResult, TrialSummary
from ..tracking.results import SCORE
from ..tracking.store import client, metric_key


def trial_rows(trials: list[TrialSummary], columns: list[str]) -> list[dict]:
    rows = []
    for t in trials:
        row = {"trial": t.name, "status": t.status}
        row.update({f"param:{k}": v for k, v in t.params.items()})
        row.update({c: t.metrics.get(c) for c in columns})
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "(no trials)\n"
    keys = list(dict.fromkeys(k for r in rows for k in r))
    cell = lambda v: "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    return markdown_table(keys, [[cell(r.get(k)) for k in keys] for r in rows]) + "\n"


def csv_text(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(dict.fromkeys(k for r in rows for k in r)) or ["trial"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_csv(rows: list[dict], path: Path) -> Path:
    path.write_text(csv_text(rows))
    return path


def summary_columns(result: SweepResult) -> list[str]:
    keys = [o.metric for o in result.objectives] + [SCORE]
    keys += sorted({k for t in result.trials for k in t.metrics if k.startswith("final/")} - {"final/done"})
    return list(dict.fromkeys(keys))


def _paired(result: SweepResult) -> bool:
    return any("arm" in t.params for t in result.trials)


def log_sweep_summary(tracking_uri: str, result: SweepResult, extra_files: dict[str, str] = (),
                      top: int = 3) -> None:
    """Writes the summary files to a temporary folder and logs them to the parent run (under `<sweep name>/`)."""
    best = None if _paired(result) else result.best()  # a paired comparison has no best trial across arms
    with tempfile.TemporaryDirectory(prefix="adaptnet-summary-") as folder:
        _write_summary(Path(folder), result, best, dict(extra_files), top)
        mlflow = client(tracking_uri)
        for path in sorted(Path(folder).iterdir()):
            mlflow.log_artifact(result.parent_run_id, str(path), artifact_path=result.name)
    if best:
        mlflow.set_tag(result.parent_run_id, f"adaptnet.best_trial.{result.name}", best.name)
        for key in [o.metric for o in result.objectives]:
            if best.metrics.get(key) is not None:
                mlflow.log_metric(result.parent_run_id, metric_key(f"best/{result.name}/{key}"), float(best.metrics[key]))


def _write_summary(folder: Path, result: SweepResult, best, extra_files: dict[str, str], top: int) -> None:
    from ...metrics.plots import plot_series

    rows = trial_rows(result.trials, summary_columns(result))
    write_csv(rows, folder / "trials.csv")
    (folder / "trials.md").write_text(markdown(rows))
    if best and best.config:
        (folder / "best_config.yaml").write_text(yaml.safe_dump(best.config, sort_keys=False))
    objective = result.objectives[0]
    ranked = sorted((t for t in result.finished() if t.metrics.get(objective.metric) is not None),
                    key=lambda t: t.metrics[objective.metric], reverse=objective.mode == "max")[:top]
    series = {t.name: accuracy_cost_points(t.metrics) for t in ranked}
    if any(series.values()) and not _paired(result):  # a paired comparison's per-arm figure is the one to read
        plot_series(series, f"{result.name}: best {len(series)} trials", folder / "accuracy_vs_cost.png")
    if len(result.objectives) > 1:
        costs = [k for k in summary_columns(result) if k.startswith(("final/macs_", "final/latency_ms_"))]
        front = trial_rows(result.pareto_front(), list(dict.fromkeys([o.metric for o in result.objectives] + costs)))
        write_csv(front, folder / "pareto_front.csv")
        (folder / "pareto_front.md").write_text(markdown(front))
    for name, text in extra_files.items():
        (folder / name).write_text(text)
