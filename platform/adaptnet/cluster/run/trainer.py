"""The one `TorchTrainer` builder, for `adaptnet train --workers` and for multi-worker sweep trials."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...loop import RunConfig
from .job import RunHooks, WorkerJob
from .storage import storage_target


@dataclass(frozen=True)
class Scaling:
    """Ray Train workers of one training and what each reserves."""
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def threads(self) -> int:
        return max(1, int(self.cpus_per_worker))


def absolute_paths(cfg: RunConfig) -> RunConfig:
    """Workers do not start in the driver's directory: make local paths absolute."""
    tree = cfg.model_dump()
    tree["output_dir"] = str(Path(cfg.output_dir).resolve())
    dataset = cfg.data.dataset
    if Path(dataset).exists():
        tree["data"]["dataset"] = str(Path(dataset).resolve())
    for section, key in (("data", "split_from"), ("imta", "stage1_checkpoint"), ("adn", "teacher_checkpoint"),
                         ("data", "cache_dir")):
        if tree[section][key]:
            tree[section][key] = str(Path(tree[section][key]).resolve())
    tree["train"]["progress"] = False  # one line per epoch in `ray job logs`, no per-step bars
    return RunConfig.model_validate(tree)


def trainer_data(cfg: RunConfig) -> dict | None:
    """The job's Ray Data plan when the loader is `ray` (decided here, on the driver), else None (workers load
    their data themselves)."""
    from ...data.plan import decide

    plan = decide(cfg.data, on_ray=True)
    if plan.loader != "ray":
        return None
    from .ray_data import driver_plan

    return driver_plan(cfg, plan)


def build_trainer(cfg: RunConfig, scaling: Scaling, name: str, storage: str | None, *, tracking_uri: str,
                  run_id: str, handoff=None, hooks: RunHooks | None = None, callbacks=(), max_failures: int = 0,
                  keep_checkpoints: int = 2):
    """A TorchTrainer running `worker_loop` on the `WorkerJob` of `cfg` (paths made absolute, the Ray Data plan
    made here when the loader is `ray`), named `name` in `storage` (Train V2 resumes a trainer by storage path +
    name)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from .worker import worker_loop

    cfg = absolute_paths(cfg)
    ray_data = trainer_data(cfg)
    job = WorkerJob(run=cfg.model_dump(), tracking_uri=tracking_uri, mlflow_run_id=run_id, threads=scaling.threads(),
                    handoff=handoff, ray_data=ray_data, hooks=hooks or RunHooks())
    storage_path, filesystem = storage_target(storage)
    return TorchTrainer(
        worker_loop,
        train_loop_config={"job": job},
        scaling_config=ray.train.ScalingConfig(
            num_workers=scaling.workers, use_gpu=scaling.gpus_per_worker > 0,
            resources_per_worker={"CPU": scaling.cpus_per_worker,
                                  **({"GPU": scaling.gpus_per_worker} if scaling.gpus_per_worker else {})}),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path, storage_filesystem=filesystem, callbacks=list(callbacks),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=keep_checkpoints),
            logging_config=ray.train.LoggingConfig(log_level="WARNING")),  # our epoch line, not every report
    )
