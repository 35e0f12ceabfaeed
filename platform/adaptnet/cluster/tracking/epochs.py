"""Rank 0's per-epoch metrics → MLflow. Logging is idempotent per epoch (steps already in the run are
skipped) and survives a tracking server that is down: unsent epochs stay queued, are kept in the checkpoint,
and are retried."""
from __future__ import annotations

import os
import sys
import time

from .store import client, fast_fail, metric_key

TIMESTAMP_KEY = "logged_at_ms"  # when an epoch was queued; its MLflow timestamp, not a metric


def flush_timeout_s() -> float:
    """How long a run's end waits for an unreachable tracking server ($ADAPTNET_MLFLOW_FLUSH_TIMEOUT_S)."""
    return float(os.environ.get("ADAPTNET_MLFLOW_FLUSH_TIMEOUT_S", "300"))


class EpochLogger:
    """Rank 0's per-epoch metrics → MLflow, queued until the server has them."""

    def __init__(self, tracking_uri: str, run_id: str, pending: list[dict] | None = None):
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self.pending: list[dict] = list(pending or [])
        self._mlflow = None

    def add(self, epoch_metrics: dict) -> None:
        self.pending.append({**epoch_metrics, TIMESTAMP_KEY: int(time.time() * 1000)})

    def flush(self) -> bool:
        """Sends every queued epoch not already in the run (by step, default the epoch); False (and keeps the
        queue) if MLflow is down."""
        if not self.pending:
            return True
        try:
            with fast_fail():
                self._flush()
        except Exception:  # noqa: BLE001 — any tracking failure must leave training running
            return False
        self.pending = []
        return True

    def _flush(self) -> None:
        from mlflow.entities import Metric

        self._mlflow = self._mlflow or client(self.tracking_uri)
        logged = {m.step for m in self._mlflow.get_metric_history(self.run_id, "epoch")}
        for metrics in self.pending:
            step = int(metrics.get("step", metrics["epoch"]))  # multi-stage runs count steps across stages
            if step in logged:
                continue
            # the epoch's own timestamp: a batch resent after a half-done attempt repeats identical metrics,
            # which MLflow stores once
            now = int(metrics.get(TIMESTAMP_KEY, time.time() * 1000))
            batch = [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items()
                     if isinstance(v, (int, float)) and k not in ("epoch", "step", TIMESTAMP_KEY)]
            batch.append(Metric("epoch", float(metrics["epoch"]), now, step))  # last: marks the step complete
            self._mlflow.log_batch(self.run_id, metrics=batch)
            logged.add(step)

    def flush_until(self, timeout_s: float, interval_s: float = 2.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.flush():
            if time.monotonic() > deadline:
                return False
            time.sleep(interval_s)
        return True

    def flush_or_warn(self, name: str) -> bool:
        """The run's last epochs, waiting up to `flush_timeout_s()`; a server that stays down costs a warning on
        stderr, not the run (the epochs also stay in the last checkpoint)."""
        timeout = flush_timeout_s()
        if self.flush_until(timeout_s=timeout):
            return True
        sys.stderr.write(f"[{name}] MLflow unreachable for {timeout:.0f} s: {len(self.pending)} epochs not logged\n")
        return False
