"""Inside every Ray Train worker: the same `fit` as a single process, with DDP wrapping, all-reduced metrics
and resume state from Ray Train's latest checkpoint; every epoch rank 0 logs to MLflow and every rank reports
the checkpoint (rank 0's files) to Ray Train storage (a local folder or s3://). What a sweep adds comes
through the job's hooks."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ...loop import RunConfig
from ...loop.checkpoint import load_checkpoint
from ..tracking.epochs import EpochLogger
from ..tracking.system import system_metrics
from .job import CHECKPOINT_FILE, SELECTED_FILE, TRACKING_FILE, RunHooks, WorkerJob
from .storage import local_copy


def worker_loop(config: dict) -> None:
    """The TorchTrainer's loop; `config["job"]` is a `WorkerJob`."""
    import torch
    import torch.distributed as torch_dist
    import ray.train
    import ray.train.torch

    from ...loop import fit
    from ...loop.trainer import Distributed

    job: WorkerJob = config["job"]
    cfg = RunConfig.model_validate(job.run)
    torch.set_num_threads(cfg.train.threads or job.threads)
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    if job.handoff is not None:
        cfg = fetch_handoff(cfg, job.handoff)
    state, tracking = restore(ray.train.get_checkpoint())
    run_id = tracking.get("mlflow_run_id") or job.mlflow_run_id

    def wrap(model, find_unused_parameters):
        return ray.train.torch.prepare_model(model, move_to_device=False,
                                             parallel_strategy_kwargs={"find_unused_parameters": find_unused_parameters})

    def all_reduce_sum(tensor):
        reduced = tensor.to(ray.train.torch.get_device())
        torch_dist.all_reduce(reduced)
        return reduced.cpu()

    def share_buffers(module):
        for buffer in module.buffers():  # BatchNorm statistics drift apart on each rank between broadcasts
            torch_dist.broadcast(buffer, src=0)

    def broadcast_object(obj):
        shared = [obj]
        torch_dist.broadcast_object_list(shared, src=0, device=ray.train.torch.get_device())
        return shared[0]

    logger = EpochLogger(job.tracking_uri, run_id, tracking.get("pending")) if rank == 0 else None
    device = ray.train.torch.get_device()
    make_data = None
    if job.ray_data:
        from .ray_data import worker_data

        make_data = worker_data(job.ray_data, rank, world_size, device)
    dist = Distributed(rank, world_size, wrap_model=wrap, all_reduce_sum=all_reduce_sum, share_buffers=share_buffers,
                       broadcast_object=broadcast_object, resume_state=lambda _: state, device=device,
                       make_data=make_data)
    with node_system_metrics(job.tracking_uri, run_id, ctx):
        fit(cfg, [EpochReporter(rank, logger, run_id, cfg, job.hooks)], dist)
        if logger is not None:
            finish_tracking(logger, job.tracking_uri, run_id, cfg)
        last = job.hooks.after_fit(cfg, job.tracking_uri, run_id, dist)
    if last is not None:
        ray.train.report(last)


def node_system_metrics(tracking_uri: str, run_id: str, ctx):
    """System metrics of every node, sampled by its first worker: `system/…` for rank 0's node,
    `system/<node ip>/…` for the others."""
    if ctx.get_local_rank() != 0:
        return contextlib.nullcontext()
    import ray

    node = None if ctx.get_world_rank() == 0 else ray.util.get_node_ip_address()
    return system_metrics(tracking_uri, run_id, node_id=node)


def fetch_handoff(cfg: RunConfig, checkpoint) -> RunConfig:
    """The previous stage's selected checkpoint, fetched from storage into this node's run directory, as the
    config's stage-1 checkpoint (or teacher) and split source (never a path on another node). Workers of one node may fetch
    at once: each writes its own part file and renames it into place (atomic; the copies are equal)."""
    local = cfg.run_dir / "handoff" / SELECTED_FILE
    if not local.exists():
        local.parent.mkdir(parents=True, exist_ok=True)
        part = local.with_suffix(f".part-{os.getpid()}")
        with local_copy(checkpoint) as folder:
            shutil.copyfile(Path(folder) / SELECTED_FILE, part)
        part.replace(local)
    from ...loop.pipeline import with_stage1

    return RunConfig.model_validate(with_stage1(cfg.model_dump(), str(local)))


def finish_tracking(logger: EpochLogger, tracking_uri: str, run_id: str, cfg: RunConfig) -> None:
    """Last epochs and artifacts to MLflow; a tracking server that stays down costs a warning, not the run
    (its epochs also stay in the last checkpoint's tracking.json)."""
    from ..tracking.artifacts import log_run_artifacts

    if not logger.flush_or_warn(cfg.name):
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
    checkpoint, the MLflow run id and the epochs MLflow has not received yet. The last epoch's checkpoint also
    carries the held-out-best one (`selected.pt`), which a later stage starts from."""

    def __init__(self, rank: int, logger: EpochLogger | None, run_id: str, cfg: RunConfig, hooks: RunHooks):
        self.rank, self.logger, self.run_id, self.cfg, self.hooks = rank, logger, run_id, cfg, hooks

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_path: Path | None) -> None:
        import ray.train

        if self.rank != 0:
            ray.train.report({"epoch": metrics["epoch"]})
            return
        metrics = self.hooks.epoch_metrics(metrics)
        self.logger.add(metrics)
        self.logger.flush()
        with tempfile.TemporaryDirectory() as folder:
            shutil.copyfile(checkpoint_path, Path(folder) / CHECKPOINT_FILE)
            if metrics["epoch"] == self.cfg.train.epochs:
                from ...loop.trainer import best_checkpoint

                shutil.copyfile(best_checkpoint(self.cfg.run_dir), Path(folder) / SELECTED_FILE)
            tracking = {"mlflow_run_id": self.run_id, "pending": self.logger.pending}
            (Path(folder) / TRACKING_FILE).write_text(json.dumps(tracking))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
