"""Inside a sweep trial: one `adaptnet train` run (every stage), its per-epoch reports to Tune and MLflow,
and its final evaluation. Single-worker trials train in the trial process; multi-worker trials run a Ray Train
`TorchTrainer` per stage (the next stage starts from the previous one's selected checkpoint in storage)."""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..deploy.latency import latency_metrics
from ..loop import RunConfig, stage_configs
from .models_registry import log_trial_model
from .stage_share import StageShare, run_stages
from .storage import local_copy, storage_target
from .sweep_runs import NODE_TAG, PARENT_TAG, SWEEP_TAG, TRIAL_TAG, git_commit
from .tracking import EpochLogger, client, find_or_create_run, find_run, flatten
from .trial_config import SPECIAL_KEYS, trial_config, trial_overrides
from .trial_results import SCORE, final_result, final_summary, log_final, score
from .views import system_metrics

@dataclass
class TrialContext:
    """What every trial of a sweep shares (shipped once through the object store)."""
    sweep: str
    sweep_key: str
    base: dict
    arms: dict[str, dict[str, Any]]
    tracking_uri: str
    experiment: str
    parent_run_id: str
    budgets: tuple[float, ...]
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    storage: str | None
    scratch: str
    shared_stages: str | None = None  # where equal stages are published (single-worker trials); None: no sharing
    broker: Any = None                # the stage_share broker actor
    shared_keys: set = field(default_factory=set)  # stage keys that more than one trial trains
    latency_batches: tuple[int, ...] = ()


def run_trial(params: dict[str, Any], ctx: TrialContext) -> None:
    """The Tune trainable: one run, every stage, then its final evaluation."""
    import logging

    import ray
    from ray import tune

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per epoch is noise
    tune_ctx = tune.get_context()
    trial_id = tune_ctx.get_trial_id()
    overrides = trial_overrides(params, ctx.arms)
    name = f"{params['arm']}-s{params['seed']}" if {"arm", "seed"} <= set(params) else trial_id
    output_dir = Path(ctx.scratch) / ctx.sweep / trial_id
    cfg = trial_config(ctx.base, overrides, name, str(output_dir))
    run_key = f"{ctx.sweep_key}/{trial_id}"
    done = finished_summary(ctx.tracking_uri, ctx.experiment, run_key)
    if done:  # finished, but the driver died before Tune recorded it: report again, train nothing
        tune.report(final_result(done))
        return
    run_id = find_or_create_run(
        ctx.tracking_uri, ctx.experiment, run_key=run_key, run_name=f"{ctx.sweep}/{name}",
        params={**flatten(cfg.model_dump()), **{f"trial.{k}": v for k, v in params.items()},
                **{k: v for k, v in params.items() if k in SPECIAL_KEYS}},  # `arm` first in compare views
        tags={PARENT_TAG: ctx.parent_run_id, TRIAL_TAG: trial_id, SWEEP_TAG: ctx.sweep,
              NODE_TAG: ray.get_runtime_context().get_node_id(),
              "adaptnet.technique": cfg.technique, "adaptnet.model": cfg.model.name,
              **({"adaptnet.arm": str(params["arm"])} if "arm" in params else {})})
    try:
        if ctx.workers == 1:
            summary = _train_in_trial(cfg, ctx, run_id)
            if ctx.latency_batches:  # on this trial's own device
                summary.update(latency_metrics(_selected_checkpoint(cfg), ctx.budgets, ctx.latency_batches))
            log_trial_model(ctx.tracking_uri, run_id, _selected_checkpoint(cfg), ctx.budgets, git_commit())
            log_final(ctx.tracking_uri, run_id, cfg, summary)
            tune.report(final_result(summary))
        else:  # rank 0 of the last stage logs and reports the final summary
            _train_with_torch_trainer(cfg, ctx, run_id, trial_id)
    except BaseException:
        client(ctx.tracking_uri).set_terminated(run_id, "FAILED")
        raise


def finished_summary(tracking_uri: str, experiment: str, run_key: str) -> dict[str, float] | None:
    """The final metrics of the trial's child run if it already FINISHED, else None."""
    mlflow = client(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    run = found and find_run(mlflow, found.experiment_id, run_key)
    if not run or run.info.status != "FINISHED":
        return None
    return {k: v for k, v in run.data.metrics.items() if k.startswith("final/")} or None


def _stages_with_offsets(cfg: RunConfig) -> list[tuple[RunConfig, int]]:
    stages, offset, out = stage_configs(cfg), 0, []
    for stage in stages:
        out.append((stage, offset))
        offset += stage.train.epochs
    return out


def _train_in_trial(cfg: RunConfig, ctx: TrialContext, run_id: str) -> dict[str, float]:
    """Single-worker trials: the loop runs right here, on the trial's CPUs (and GPU, when it has one)."""
    import torch
    from ray import tune

    torch.set_num_threads(max(1, int(ctx.cpus_per_worker)))
    pending = _restore_run_dir(tune.get_checkpoint(), cfg.run_dir)
    logger = EpochLogger(ctx.tracking_uri, run_id, pending)
    share = ctx.shared_stages and StageShare(ctx.shared_stages, storage_target(ctx.storage)[1], ctx.broker,
                                             tune.get_context().get_trial_id(), ctx.shared_keys)
    with system_metrics(ctx.tracking_uri, run_id):
        counts = run_stages(_stages_with_offsets(cfg), lambda offset: TrialEpochReporter(cfg, logger, offset),
                            share or None)
    logger.flush_until(timeout_s=float(os.environ.get("ADAPTNET_MLFLOW_FLUSH_TIMEOUT_S", "300")))
    return {**final_summary(stage_configs(cfg)[-1], ctx.budgets), **counts}


class TrialEpochReporter:
    """End of every epoch of a single-worker trial: MLflow (queued while the server is down), then Tune with
    a checkpoint of the whole run directory (every stage, so a restart anywhere resumes)."""

    def __init__(self, cfg: RunConfig, logger: EpochLogger, step_offset: int):
        self.cfg, self.logger, self.step_offset = cfg, logger, step_offset

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_path) -> None:
        import ray.tune

        step = self.step_offset + int(metrics["epoch"])
        metrics = {**metrics, "step": step, SCORE: score(metrics)}
        self.logger.add(metrics)
        self.logger.flush()
        with tempfile.TemporaryDirectory() as folder:
            shutil.copytree(self.cfg.run_dir, Path(folder) / "run")
            (Path(folder) / "pending.json").write_text(_dumps(self.logger.pending))
            ray.tune.report({k: v for k, v in metrics.items() if v is not None},
                            checkpoint=ray.tune.Checkpoint.from_directory(folder))


def _dumps(value) -> str:
    import json

    return json.dumps(value)


def _restore_run_dir(checkpoint, run_dir: Path) -> list[dict]:
    """The run directory as of the trial's last checkpoint (replacing whatever this node has); returns the
    epochs MLflow had not received."""
    import json

    if checkpoint is None:
        return []
    with local_copy(checkpoint) as folder:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        shutil.copytree(Path(folder) / "run", run_dir)
        return json.loads((Path(folder) / "pending.json").read_text())


def _train_with_torch_trainer(cfg: RunConfig, ctx: TrialContext, run_id: str, trial_id: str) -> None:
    """Multi-worker trials: one TorchTrainer per stage, named after the trial, so that a restored trial's
    trainer resumes from its own latest checkpoint (Train V2 restores by storage path + name)."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from .train import absolute_paths, trainer_data, worker_loop

    storage_path, filesystem = storage_target(ctx.storage)
    stages = _stages_with_offsets(cfg)
    result = None
    for index, (stage, offset) in enumerate(stages):
        last = index == len(stages) - 1
        data_kwargs, data_config = trainer_data(stage)
        result = TorchTrainer(
            worker_loop,
            **data_kwargs,
            train_loop_config={"run": absolute_paths(stage).model_dump(), "tracking_uri": ctx.tracking_uri,
                               "mlflow_run_id": run_id, "threads": max(1, int(ctx.cpus_per_worker)),
                               "step_offset": offset, "final_budgets": list(ctx.budgets) if last else None,
                               "handoff": result.checkpoint if result else None, **data_config},
            scaling_config=ray.train.ScalingConfig(
                num_workers=ctx.workers, use_gpu=ctx.gpus_per_worker > 0,
                resources_per_worker={"CPU": ctx.cpus_per_worker,
                                      **({"GPU": ctx.gpus_per_worker} if ctx.gpus_per_worker else {})}),
            run_config=ray.train.RunConfig(
                name=f"{ctx.sweep}-{trial_id}-{stage.name}", storage_path=storage_path,
                storage_filesystem=filesystem, callbacks=[TuneReportCallback()],
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
                logging_config=ray.train.LoggingConfig(log_level="WARNING")),
        ).fit()


def _selected_checkpoint(cfg: RunConfig) -> Path:
    from ..loop.trainer import best_checkpoint

    return best_checkpoint(stage_configs(cfg)[-1].run_dir)
