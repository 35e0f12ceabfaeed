"""`adaptnet train --workers N`: the framework-free loop inside a Ray Train (V2) TorchTrainer.

The driver validates the config, finds or creates the MLflow run, starts or joins Ray and fits the trainer
(`trainer.build_trainer`); the workers run `worker.worker_loop`.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ...loop import RunConfig
from ..tracking.store import client, find_or_create_run, flatten, resolve_tracking_uri
from .runtime import runtime_env
from .storage import storage_target
from .trainer import Scaling, absolute_paths, build_trainer


@dataclass
class ClusterOptions:
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None  # None: one GPU per worker on a cluster with GPUs, else none
    address: str | None = None           # None: start a local Ray instance
    storage: str | None = None           # local folder or s3://bucket/prefix; default ./ray_results
    max_failures: int = 2
    tracking_uri: str | None = None      # default MLFLOW_TRACKING_URI or ./mlflow.db
    experiment: str = "adaptnet"
    restart: bool = False                # archive an earlier run of this name (storage and MLflow) first

    def scaling(self, cluster_gpus: float = 0.0) -> Scaling:
        return Scaling(self.workers, self.cpus_per_worker, gpus_per_worker(self.gpus_per_worker, cluster_gpus))


def gpus_per_worker(requested: float | None, cluster_gpus: float) -> float:
    """What the user asked for, else one GPU per worker on a cluster that has GPUs (DDP on NCCL), else none."""
    if requested is not None:
        return requested
    return 1.0 if cluster_gpus >= 1 else 0.0


def batch_params(cfg: RunConfig, workers: int) -> dict:
    """What MLflow records of the batch: the global batch (train.batch_size) and each worker's share."""
    return {"cluster.workers": workers, "train.global_batch_size": cfg.train.batch_size,
            "train.per_worker_batch_size": cfg.train.batch_size // workers}


def train_on_ray(cfg: RunConfig, options: ClusterOptions, handoff=None):
    """Runs one training on Ray Train and returns its `ray.train.Result`. `handoff`: the previous stage's
    result checkpoint, whose selected checkpoint this stage starts from (fetched from storage by the workers)."""
    import ray

    from ...loop.config import micro_batch
    from ..preflight import check_cluster

    cfg = absolute_paths(cfg)
    micro_batch(cfg, options.workers)  # the global batch must divide over the workers: fail before Ray starts
    tracking_uri = resolve_tracking_uri(options.tracking_uri)
    check_cluster(tracking_uri, "--tracking-uri", options.address, options.storage, options.experiment)
    storage_path, filesystem = storage_target(options.storage)
    if options.restart:
        archive_storage(storage_path, filesystem, cfg.name)
    run_id = find_or_create_run(tracking_uri, options.experiment, run_key=f"{storage_path}/{cfg.name}",
                                run_name=cfg.name, params={**flatten(cfg.model_dump()), **batch_params(cfg, options.workers)},
                                tags={"adaptnet.technique": cfg.technique, "adaptnet.model": cfg.model.name},
                                restart=options.restart)
    if not ray.is_initialized():
        ray.init(address=options.address or "local", runtime_env=runtime_env())
    scaling = options.scaling(ray.cluster_resources().get("GPU", 0.0))
    if options.gpus_per_worker is None and scaling.gpus_per_worker:
        print(f"--gpus-per-worker: {scaling.gpus_per_worker:g} (the cluster has GPUs; --gpus-per-worker 0 trains on "
              "CPUs)", file=sys.stderr)
    trainer = build_trainer(cfg, scaling, cfg.name, options.storage, tracking_uri=tracking_uri,
                            run_id=run_id, handoff=handoff, max_failures=options.max_failures)
    try:
        result = trainer.fit()
    except BaseException:
        client(tracking_uri).set_terminated(run_id, "FAILED")  # no run left dangling in RUNNING
        raise
    client(tracking_uri).set_terminated(run_id, "FINISHED")
    return result


def archive_storage(storage_path: str, filesystem, name: str) -> None:
    """`--restart`: Ray Train resumes from `<storage>/<name>`; move a local one aside (S3 cannot be renamed)."""
    folder = Path(storage_path) / name
    if filesystem is not None or storage_path.startswith("s3://"):
        from ...loop import ConfigError

        raise ConfigError(f"--restart: S3 storage {storage_path!r} cannot be archived in place; use a new name")
    if folder.exists():
        folder.rename(folder.with_name(f"{name}.archived-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"))
