"""Deployable adaptive models, framework-free (torch only; the MLflow wrapper is `adaptnet.cluster.tracking.export`):
a multi-exit net with held-out-calibrated thresholds per budget running real per-sample early exit, or an
ADN sub-network extracted as a plain static network; preprocessing from encoded images included."""


class DeployError(ValueError):
    """Bad export or request input; str() is one line naming the field."""
