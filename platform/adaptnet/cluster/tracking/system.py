"""MLflow's system metrics (CPU, memory, disk, network; GPU with pynvml) on a run while training runs."""
from __future__ import annotations

import os
from contextlib import contextmanager


@contextmanager
def system_metrics(tracking_uri: str, run_id: str, interval_s: float | None = None, node_id: str | None = None):
    """MLflow's system metrics monitor (system/cpu_utilization_percentage, memory, GPU with pynvml) on the run
    while the block runs; continues the run's steps on a restart. With `node_id` the keys are
    `system/<node_id>/…` (one monitor per node of a multi-node run). One sample every `interval_s`
    (default $ADAPTNET_SYSTEM_METRICS_INTERVAL_S, else 10 s); MLflow logs the first after one whole interval.
    Without psutil it logs nothing."""
    if interval_s is None:
        interval_s = float(os.environ.get("ADAPTNET_SYSTEM_METRICS_INTERVAL_S", "10"))
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, resume_logging=True,
                                       node_id=node_id, tracking_uri=tracking_uri)
    except ImportError:
        yield
        return
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
