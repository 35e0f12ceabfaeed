"""MLflow's system metrics (CPU, memory, disk, network; GPU with pynvml) on a run while training runs."""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def system_metrics(tracking_uri: str, run_id: str, interval_s: float = 10.0, node_id: str | None = None):
    """MLflow's system metrics monitor (system/cpu_utilization_percentage, memory, GPU with pynvml) on the run
    while the block runs; continues the run's steps on a restart. With `node_id` the keys are
    `system/<node_id>/…` (one monitor per node of a multi-node run). Without psutil it logs nothing."""
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
