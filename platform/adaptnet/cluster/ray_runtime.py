"""The runtime env adaptnet gives every Ray job it starts or joins from outside a submitted job."""
import os

# Ray Train polls worker health every 0.2 s instead of 2 s: a run's teardown takes ~1 s, not ~5 s.
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}


def point_state_api_at_own_cluster() -> None:
    """Worker setup hook. Ray's state API, which Ray Train's PlacementGroupCleaner polls, finds the cluster
    through $RAY_ADDRESS or else the machine's last `ray start` (/tmp/ray/ray_current_cluster). For a
    `ray.init(address="local")` cluster that file is missing or names another, dead cluster: every poll then
    times out, each TorchTrainer's shutdown stalls ~12 s, and a trial stopped by ASHA leaks its placement group
    (the cleaner's thread dies on the timeout). Each worker is pointed at the cluster it belongs to."""
    import ray

    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)


def runtime_env() -> dict:
    return {"env_vars": dict(RAY_ENV),
            "worker_process_setup_hook": f"{__name__}.{point_state_api_at_own_cluster.__name__}"}
