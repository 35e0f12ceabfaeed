"""The runtime env adaptnet gives every Ray job it starts or joins from outside a submitted job, and what each
Ray worker process sets up first."""
import logging
import os
import sys
import tempfile
from pathlib import Path

RAY_ENV = {
    # Ray Train polls worker health every 0.2 s instead of 2 s: a run's teardown takes ~1 s, not ~5 s.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    # A trial's model logging and latency runs download artifacts: no progress bars in the driver's terminal.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # MLflow leaves its logger to the setup hook, which then need not import it: most workers (idle ones, Ray
    # Train's controller) never log to MLflow, and the import costs each 1–2 s of CPU while a run starts.
    "MLFLOW_CONFIGURE_LOGGING": "false",
}
# Driver-side: every trial's lines, not "[repeated 2x across cluster]". Ray reads it when it is imported.
DRIVER_ENV = {"RAY_DEDUP_LOGS": "0"}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WORKER_LOG = "adaptnet-worker-{pid}.log"  # in the Ray session's logs folder, beside Ray's own worker logs


def setup_worker() -> None:
    """Worker setup hook: the state API pointed at this cluster, MLflow's INFO lines into a log file, and no
    traceback of Ray's own stopping of the worker."""
    point_state_api_at_own_cluster()
    quiet_mlflow_logging()
    quiet_stop()


def quiet_stop() -> None:
    """Ray stops a worker with SIGTERM, whose handler raises SystemExit wherever the worker is. Inside a garbage
    collector's callback Python cannot raise it and prints it as an "Exception ignored" traceback, which Ray
    forwards to the driver's terminal under the sweep's table. That case alone is dropped: every other
    exception Python cannot raise is printed as before."""
    printed = sys.unraisablehook

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, SystemExit):
            printed(unraisable)

    sys.unraisablehook = hook


def point_state_api_at_own_cluster() -> None:
    """Ray's state API, which Ray Train's PlacementGroupCleaner polls, finds the cluster through $RAY_ADDRESS
    or else the machine's last `ray start` (/tmp/ray/ray_current_cluster). For a `ray.init(address="local")`
    cluster that file is missing or names another, dead cluster: every poll then times out, each
    TorchTrainer's shutdown stalls ~12 s, and a trial stopped by ASHA leaks its placement group (the cleaner's
    thread dies on the timeout). Each worker is pointed at the cluster it belongs to."""
    import ray

    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)


def quiet_mlflow_logging() -> None:
    """Ray forwards every line a worker writes to the driver's terminal. MLflow's INFO lines (system metrics
    started / stopped, …) go to `WORKER_LOG` in the session's logs folder instead; warnings and errors still
    reach the terminal."""
    logger = logging.getLogger("mlflow")
    if os.environ.get("MLFLOW_CONFIGURE_LOGGING", "").lower() == "false":  # as MLflow would: INFO, to stderr
        terminal = logging.StreamHandler()
        terminal.setFormatter(logging.Formatter(LOG_FORMAT, "%Y/%m/%d %H:%M:%S"))
        logger.handlers, logger.propagate = [terminal], False
        logger.setLevel(os.environ.get("MLFLOW_LOGGING_LEVEL", "INFO").upper())
    else:
        import mlflow  # noqa: F401 — configures the "mlflow" logger's handlers, which are adjusted here
    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
    file_handler = logging.FileHandler(_logs_dir() / WORKER_LOG.format(pid=os.getpid()), delay=True)
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(file_handler)


def _logs_dir() -> Path:
    try:
        from ray._private.worker import global_worker

        return Path(global_worker.node.get_logs_dir_path())
    except (ImportError, AttributeError):  # not a Ray worker (a plain process calling the hook)
        return Path(tempfile.gettempdir())


def runtime_env() -> dict:
    return {"env_vars": dict(RAY_ENV), "worker_process_setup_hook": f"{__name__}.{setup_worker.__name__}"}
