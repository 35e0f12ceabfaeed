"""`adaptnet train --workers N`: the framework-free loop inside a Ray Train (V2) TorchTrainer.

Driver: validates the config, finds or creates the MLflow run, starts or joins Ray, fits the trainer.
Workers: the same `fit` as a single process, with DDP wrapping, all-reduced metrics and resume state
from Ray Train's latest checkpoint; every epoch rank 0 logs to MLflow and every rank reports the
checkpoint (rank 0's files) to Ray Train storage (a local folder or s3://).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..loop import RunConfig
from ..loop.checkpoint import load_checkpoint
from .ray_runtime import runtime_env
from .storage import local_copy, storage_target
from .tracking import EpochLogger, client, find_or_create_run, flatten, resolve_tracking_uri
from .trial_results import SCORE, final_result, final_summary, log_final, score

CHECKPOINT_FILE = "checkpoint.pt"
SELECTED_FILE = "selected.pt"    # in a run's final checkpoint: the held-out-best one, which a later stage starts from
TRACKING_FILE = "tracking.json"  # {"mlflow_run_id": ..., "pending": [unsent epochs]}


@dataclass
class ClusterOptions:
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    address: str | None = None           # None: start a local Ray instance
    storage: str | None = None           # local folder or s3://bucket/prefix; default ./ray_results
    max_failures: int = 2
    tracking_uri: str | None = None      # default MLFLOW_TRACKING_URI or ./mlflow.db
    experiment: str = "adaptnet"
    restart: bool = False                # archive an earlier run of this name (storage and MLflow) first


def absolute_paths(cfg: RunConfig) -> RunConfig:
    """Workers do not start in the driver's directory: make local paths absolute."""
    tree = cfg.model_dump()
    tree["output_dir"] = str(Path(cfg.output_dir).resolve())
    dataset = cfg.data.dataset
    if Path(dataset).exists():
        tree["data"]["dataset"] = str(Path(dataset).resolve())
    for section, key in (("data", "split_from"), ("imta", "stage1_checkpoint"), ("data", "cache_dir")):
        if tree[section][key]:
            tree[section][key] = str(Path(tree[section][key]).resolve())
    tree["train"]["progress"] = False  # one line per epoch in `ray job logs`, no per-step bars
    return RunConfig.model_validate(tree)


def batch_params(cfg: RunConfig, workers: int) -> dict:
    """What MLflow records of the batch: the global batch (train.batch_size) and each worker's share."""
    return {"cluster.workers": workers, "train.global_batch_size": cfg.train.batch_size,
            "train.per_worker_batch_size": cfg.train.batch_size // workers}


def trainer_data(cfg: RunConfig) -> tuple[dict, dict]:
    """(TorchTrainer keyword arguments, train_loop_config entries) for the run's data: Ray Data datasets
    built here on the driver when the loader is `ray`, nothing otherwise (workers load data themselves)."""
    from ..data import choose_loader

    if choose_loader(cfg.data, on_ray=True) != "ray":
        return {}, {}
    from .ray_data import build_datasets, data_config

    datasets, meta = build_datasets(cfg)
    return {"datasets": datasets, "dataset_config": data_config()}, {"ray_data": meta}


def train_on_ray(cfg: RunConfig, options: ClusterOptions, handoff=None):
    """Runs one training on Ray Train and returns its `ray.train.Result`. `handoff`: the previous stage's
    result checkpoint, whose selected checkpoint this stage starts from (fetched from storage by the workers)."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from ..loop.config import micro_batch
    from .preflight import check_cluster

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
    data_kwargs, data_config = trainer_data(cfg)
    trainer = TorchTrainer(
        worker_loop,
        **data_kwargs,
        train_loop_config={"run": cfg.model_dump(), "tracking_uri": tracking_uri, "mlflow_run_id": run_id,
                           "threads": max(1, int(options.cpus_per_worker)), "handoff": handoff, **data_config},
        scaling_config=ray.train.ScalingConfig(
            num_workers=options.workers, use_gpu=options.gpus_per_worker > 0,
            resources_per_worker={"CPU": options.cpus_per_worker,
                                  **({"GPU": options.gpus_per_worker} if options.gpus_per_worker else {})}),
        run_config=ray.train.RunConfig(
            name=cfg.name, storage_path=storage_path, storage_filesystem=filesystem,
            failure_config=ray.train.FailureConfig(max_failures=options.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            logging_config=ray.train.LoggingConfig(log_level="WARNING")),  # our epoch line, not every report
    )
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
        from ..loop import ConfigError

        raise ConfigError(f"--restart: S3 storage {storage_path!r} cannot be archived in place; use a new name")
    if folder.exists():
        folder.rename(folder.with_name(f"{name}.archived-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"))


def worker_loop(config: dict) -> None:
    """Runs in every Train worker. Sweeps add `step_offset` (epochs of earlier stages, for MLflow steps and
    Tune's scores) and `final_budgets` (the last stage: rank 0 evaluates, logs and reports the summary)."""
    import torch
    import torch.distributed as torch_dist
    import ray.train
    import ray.train.torch

    from ..loop import fit
    from ..loop.trainer import Distributed

    cfg = RunConfig.model_validate(config["run"])
    torch.set_num_threads(cfg.train.threads or config["threads"])
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    if config.get("handoff") is not None:
        cfg = fetch_handoff(cfg, config["handoff"])
    state, tracking = restore(ray.train.get_checkpoint())
    run_id = tracking.get("mlflow_run_id") or config["mlflow_run_id"]

    def wrap(model, find_unused_parameters):
        return ray.train.torch.prepare_model(model, move_to_device=False,
                                             parallel_strategy_kwargs={"find_unused_parameters": find_unused_parameters})

    def all_reduce_sum(tensor):
        device = ray.train.torch.get_device()
        reduced = tensor.to(device)
        torch_dist.all_reduce(reduced)
        return reduced.cpu()

    logger = EpochLogger(config["tracking_uri"], run_id, tracking.get("pending")) if rank == 0 else None
    device = ray.train.torch.get_device()
    make_data = None
    if config.get("ray_data"):
        from .ray_data import worker_data

        make_data = worker_data(config["ray_data"], rank, world_size, device)
    dist = Distributed(rank, world_size, wrap_model=wrap, all_reduce_sum=all_reduce_sum,
                       resume_state=lambda _: state, device=device, make_data=make_data)
    fit(cfg, [EpochReporter(rank, logger, run_id, config.get("step_offset"), cfg)], dist)
    if logger is not None:
        finish_tracking(logger, config["tracking_uri"], run_id, cfg)
    if config.get("final_budgets") is not None:
        report_final(cfg, config["tracking_uri"], run_id, config["final_budgets"], rank)


def fetch_handoff(cfg: RunConfig, checkpoint) -> RunConfig:
    """The previous stage's selected checkpoint, fetched from storage into this node's run directory, as the
    config's stage-1 checkpoint and split source (never a path on another node)."""
    local = cfg.run_dir / "handoff" / SELECTED_FILE
    if not local.exists():
        local.parent.mkdir(parents=True, exist_ok=True)
        with local_copy(checkpoint) as folder:
            shutil.copyfile(Path(folder) / SELECTED_FILE, local.with_suffix(".part"))
        local.with_suffix(".part").replace(local)
    tree = cfg.model_dump()
    tree["imta"]["stage1_checkpoint"] = tree["data"]["split_from"] = str(local)
    return RunConfig.model_validate(tree)


def report_final(cfg: RunConfig, tracking_uri: str, run_id: str, budgets: list[float], rank: int) -> None:
    """A sweep trial's last result: rank 0 evaluates the selected checkpoint and logs it; every rank reports
    (ray.train.report is a barrier)."""
    import ray.train

    if rank != 0:
        ray.train.report({})
        return
    summary = final_summary(cfg, tuple(budgets))
    log_final(tracking_uri, run_id, cfg, summary)
    ray.train.report(final_result(summary))


def finish_tracking(logger: EpochLogger, tracking_uri: str, run_id: str, cfg: RunConfig) -> None:
    """Last epochs and artifacts to MLflow; a tracking server that stays down costs a warning, not the run
    (its epochs also stay in the last checkpoint's tracking.json)."""
    from .artifacts import log_run_artifacts

    timeout = float(os.environ.get("ADAPTNET_MLFLOW_FLUSH_TIMEOUT_S", "300"))
    if not logger.flush_until(timeout_s=timeout):
        sys.stderr.write(f"[{cfg.name}] MLflow unreachable for {timeout:.0f} s: {len(logger.pending)} epochs not logged\n")
        return
    try:
        log_run_artifacts(tracking_uri, run_id, cfg)
    except Exception as err:  # noqa: BLE001 — artifacts are a convenience copy; the checkpoint is in storage
        sys.stderr.write(f"[{cfg.name}] MLflow artifacts not logged: {err}\n")


def restore(checkpoint) -> tuple[dict | None, dict]:
    """(checkpoint dict, tracking state) from Ray Train's latest checkpoint, or (None, {})."""
    if checkpoint is None:
        return None, {}
    with local_copy(checkpoint) as folder:
        state = load_checkpoint(Path(folder) / CHECKPOINT_FILE)
        tracking = json.loads((Path(folder) / TRACKING_FILE).read_text())
    return state, tracking


class EpochReporter:
    """End of every epoch: the MLflow batch (rank 0), then `ray.train.report` on every rank with rank 0's
    checkpoint, the MLflow run id and the epochs MLflow has not received yet."""

    def __init__(self, rank: int, logger: EpochLogger | None, run_id: str, step_offset: int | None = None,
                 cfg: RunConfig | None = None):
        self.rank, self.logger, self.run_id, self.step_offset, self.cfg = rank, logger, run_id, step_offset, cfg

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_path: Path | None) -> None:
        import ray.train

        if self.rank != 0:
            ray.train.report({"epoch": metrics["epoch"]})
            return
        if self.step_offset is not None:  # a sweep trial: global steps and the score Tune schedules on
            metrics = {**metrics, "step": self.step_offset + int(metrics["epoch"]), SCORE: score(metrics)}
        self.logger.add(metrics)
        self.logger.flush()
        with tempfile.TemporaryDirectory() as folder:
            shutil.copyfile(checkpoint_path, Path(folder) / CHECKPOINT_FILE)
            if self.cfg is not None and metrics["epoch"] == self.cfg.train.epochs:  # the last: what a later stage needs
                from ..loop.trainer import best_checkpoint

                shutil.copyfile(best_checkpoint(self.cfg.run_dir), Path(folder) / SELECTED_FILE)
            tracking = {"mlflow_run_id": self.run_id, "pending": self.logger.pending}
            (Path(folder) / TRACKING_FILE).write_text(json.dumps(tracking))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
