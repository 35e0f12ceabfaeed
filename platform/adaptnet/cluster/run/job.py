"""What every Ray Train worker of one training gets: a typed job, and the hooks through which a caller (a
sweep trial) adds to the plain run without branches in the worker."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CHECKPOINT_FILE = "checkpoint.pt"
SELECTED_FILE = "selected.pt"    # in a run's final checkpoint: the held-out-best one, which a later stage starts from
TRACKING_FILE = "tracking.json"  # {"mlflow_run_id": ..., "pending": [unsent epochs]}


class RunHooks:
    """What a plain `adaptnet train --workers` run does at these points: nothing. Subclasses travel to every
    worker (they must pickle)."""

    def epoch_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Rank 0, every epoch, before the metrics are logged and reported: add to them."""
        return metrics

    def after_fit(self, cfg, tracking_uri: str, run_id: str, dist) -> dict[str, float] | None:
        """Every rank (`dist`: the loop's `Distributed`, collectives included), after training and the last MLflow
        flush: the result this rank reports last (every rank must report, `ray.train.report` is a barrier), or
        None for no last report."""
        return None


@dataclass
class WorkerJob:
    """TorchTrainer's `train_loop_config["job"]`."""
    run: dict                        # the RunConfig (model_dump, paths absolute), validated again on each worker
    tracking_uri: str
    mlflow_run_id: str               # the run rank 0 logs to (a restored checkpoint's own id wins)
    threads: int                     # torch threads per worker unless train.threads is set
    handoff: Any = None              # the previous stage's result checkpoint: its selected.pt starts this stage
    ray_data: dict | None = None     # the driver's data plan (run/ray_data.py) when the loader is `ray`
    hooks: RunHooks = field(default_factory=RunHooks)
