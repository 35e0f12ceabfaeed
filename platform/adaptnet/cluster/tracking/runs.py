"""The MLflow runs of a sweep: the tags that tie a trial's child run to its sweep and parent, their lookup, and
the code version every run records."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .store import client, find_run, search_exact

TRIAL_TAG, SWEEP_TAG, NODE_TAG = "adaptnet.trial_id", "adaptnet.sweep", "adaptnet.node_id"  # node: where it first ran
ARM_TAG = "adaptnet.arm"  # a paired comparison's trial: its arm
PARENT_TAG = "mlflow.parentRunId"


def child_runs(tracking_uri: str, parent_id: str, sweep: str | None = None) -> list:
    mlflow = client(tracking_uri)
    parent = mlflow.get_run(parent_id)
    equals = {f"tags.{PARENT_TAG}": parent_id, **({f"tags.{SWEEP_TAG}": sweep} if sweep else {})}
    return search_exact(mlflow, [parent.info.experiment_id], equals)


def git_commit() -> str:
    """The repository's commit, else $ADAPTNET_GIT_COMMIT (jobs ship the tree without .git), else 'unknown'."""
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                               cwd=Path(__file__).resolve().parent)
        if found.returncode == 0:
            return found.stdout.strip()
    except OSError:
        pass
    return os.environ.get("ADAPTNET_GIT_COMMIT", "unknown")


def finished_summary(tracking_uri: str, experiment: str, run_key: str) -> dict[str, float] | None:
    """The final metrics of the trial's child run if it already FINISHED, else None."""
    mlflow = client(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    run = found and find_run(mlflow, found.experiment_id, run_key)
    if not run or run.info.status != "FINISHED":
        return None
    return {k: v for k, v in run.data.metrics.items() if k.startswith("final/")} or None
