"""What a sweep trial reports, whether it trains in its own process or through Ray Train workers: the
per-epoch score Tune schedules on, and the final evaluation logged to MLflow and reported to Tune."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ...loop import RunConfig
from .epochs import flush_timeout_s
from .store import client, retry_until

SCORE = "score"            # mean held-out top-1 over a run's outputs (exits, or super/base): ASHA's and TPE's default
FINAL_MARK = "final/done"  # present in a trial's last result once its final evaluation is logged


def score(metrics: dict[str, float]) -> float | None:
    """Mean held-out top-1 over the run's outputs (test top-1 when there is no held-out split)."""
    for split in ("holdout", "test"):
        values = [v for k, v in metrics.items() if k.startswith(f"{split}/top1_")]
        if values:
            return sum(values) / len(values)
    return None


def final_result(summary: dict[str, float]) -> dict[str, float]:
    """A trial's last Tune result: the summary, its score (of the selected checkpoint) and the done mark."""
    return {**summary, SCORE: summary["final/holdout_top1_mean"], FINAL_MARK: 1.0}


def final_summary(last_stage: RunConfig, budgets: tuple[float, ...], dist=None) -> dict[str, float] | None:
    """`final_evaluation` as flat `final/...` metrics."""
    from ...loop.evaluate import summary_metrics

    report = final_evaluation(last_stage, budgets, dist)
    return None if report is None else summary_metrics(report)


def final_evaluation(last_stage: RunConfig, budgets: tuple[float, ...], dist=None) -> dict | None:
    """The evaluation report (`adaptnet evaluate`'s) of the last stage's selected (held-out best) checkpoint.
    With the workers' `Distributed` (every rank calls it), an adaptive-depth net's sub-network table is split
    over the ranks; a multi-exit net is evaluated by rank 0 alone (the others get None)."""
    from ...loop.evaluate import evaluate_checkpoint, shards_evaluation
    from ...loop.trainer import best_checkpoint

    sharded = dist is not None and dist.world_size > 1 and shards_evaluation(last_stage)
    if dist is not None and not sharded and not dist.is_main:
        return None
    return evaluate_checkpoint(best_checkpoint(last_stage.run_dir), list(budgets), device="auto",
                               dist=dist if sharded else None)


def log_final(tracking_uri: str, run_id: str, cfg: RunConfig, summary: dict[str, float],
              model_id: str | None = None) -> None:
    """The trial's final metrics (step 0, the same keys in every arm; linked to the LoggedModel `model_id` of
    the checkpoint they measure) and its config; FINISHED. Retried while the tracking server is away (a
    restart): the same batch again is stored once."""
    import yaml
    from mlflow.entities import Metric

    mlflow = client(tracking_uri)
    now = int(time.time() * 1000)

    def send():
        mlflow.log_batch(run_id, metrics=[Metric(k, v, now, 0, model_id=model_id) for k, v in summary.items()])
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "config.yaml"
            path.write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
            mlflow.log_artifact(run_id, str(path))
        mlflow.set_terminated(run_id, "FINISHED")

    retry_until(send, flush_timeout_s())
