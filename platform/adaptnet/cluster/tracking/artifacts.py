"""What a finished run leaves in its MLflow run: config, split, costs, accuracy-vs-cost CSV + PNG,
the final checkpoint."""
from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import yaml

from ...loop import RunConfig
from ...loop.trainer import checkpoint_path
from .store import client


def output_costs(costs_report: dict) -> dict[str, int]:
    """Multiply-adds of each named output: exit k, or the super- and base-net of an adaptive-depth model."""
    if "exits" in costs_report:
        return {f"exit{e['exit']}": e["macs"] for e in costs_report["exits"]}
    configs = costs_report["configs"]
    return {"super": configs[0]["macs"], "base": configs[-1]["macs"]}


def accuracy_cost_rows(run_dir: Path) -> list[dict]:
    costs = output_costs(json.loads((run_dir / "costs.json").read_text()))
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    return [{"output": name, "macs": macs, "test_top1": last.get(f"test/top1_{name}"),
             "holdout_top1": last.get(f"holdout/top1_{name}")} for name, macs in costs.items()]


def log_run_artifacts(tracking_uri: str, run_id: str, cfg: RunConfig) -> None:
    from ...metrics.plots import plot_accuracy_cost

    mlflow = client(tracking_uri)
    run_dir = cfg.run_dir
    rows = accuracy_cost_rows(run_dir)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
        with open(folder / "accuracy_vs_cost.csv", "w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        plot_accuracy_cost(rows, f"{cfg.name} ({cfg.model.name}, {cfg.technique})", folder / "accuracy_vs_cost.png")
        for name in ("config.yaml", "accuracy_vs_cost.csv", "accuracy_vs_cost.png"):
            mlflow.log_artifact(run_id, str(folder / name))
    mlflow.log_artifact(run_id, str(run_dir / "split.pt"))
    mlflow.log_artifact(run_id, str(run_dir / "costs.json"))
    mlflow.log_artifact(run_id, str(checkpoint_path(run_dir)), artifact_path="checkpoint")
