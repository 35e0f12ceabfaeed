"""Inside a sweep trial: one `adaptnet train` run (every stage), its per-epoch reports to Tune and MLflow, and
its final evaluation, model and latency. Single-worker trials train in the trial process; multi-worker trials
run the one TorchTrainer of `run.trainer` per stage (the next stage starts from the previous one's selected
checkpoint in storage), with `TrialHooks` for what a trial adds to a plain run."""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...deploy.latency import latency_metrics
from ...loop import RunConfig, stage_configs
from ...loop.evaluate import summary_metrics
from ..run.job import RunHooks
from ..run.storage import local_copy, storage_target
from ..run.trainer import Scaling, build_trainer
from ..tracking.epochs import EpochLogger
from ..tracking.models import log_trial_model
from ..tracking.results import SCORE, final_evaluation, final_result, log_final, score
from ..tracking.runs import ARM_TAG, NODE_TAG, PARENT_TAG, SWEEP_TAG, TRIAL_TAG, finished_summary, git_commit
from ..tracking.store import client, find_or_create_run, flatten
from ..tracking.system import system_metrics
from .config import SPECIAL_KEYS, trial_config, trial_name, trial_overrides
from .stage_share import StageShare, run_stages


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
    scaling: Scaling
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
    trial_id = tune.get_context().get_trial_id()
    name = trial_name(params, trial_id)
    cfg = trial_config(ctx.base, trial_overrides(params, ctx.arms), name, str(Path(ctx.scratch) / ctx.sweep / trial_id))
    run_key = f"{ctx.sweep_key}/{trial_id}"
    done = finished_summary(ctx.tracking_uri, ctx.experiment, run_key)
    if done:  # finished, but the driver died before Tune recorded it: report again, train nothing
        tune.report(final_result(done))
        return
    run_id = find_or_create_run(
        ctx.tracking_uri, ctx.experiment, run_key=run_key, run_name=name,  # the sweep: its tag and the parent
        params={**flatten(cfg.model_dump()), **{f"trial.{k}": v for k, v in params.items()},
                **{k: v for k, v in params.items() if k in SPECIAL_KEYS}},  # `arm` first in compare views
        tags={PARENT_TAG: ctx.parent_run_id, TRIAL_TAG: trial_id, SWEEP_TAG: ctx.sweep,
              NODE_TAG: ray.get_runtime_context().get_node_id(),
              "adaptnet.technique": cfg.technique, "adaptnet.model": cfg.model.name,
              **({ARM_TAG: str(params["arm"])} if "arm" in params else {})})
    try:
        if ctx.scaling.workers == 1:
            summary, report = _train_in_trial(cfg, ctx, run_id)
            tune.report(finish_trial(cfg, ctx, run_id, _selected_checkpoint(cfg), summary, name, params, report))
        else:  # rank 0 of the last stage finishes the trial (TrialHooks.after_fit)
            _train_with_torch_trainer(cfg, ctx, run_id, trial_id, params)
    except BaseException:
        client(ctx.tracking_uri).set_terminated(run_id, "FAILED")
        raise


def finish_trial(cfg: RunConfig, ctx: TrialContext, run_id: str, selected: Path, summary: dict[str, float],
                 name: str, params: dict[str, Any], evaluated: dict | None = None) -> dict[str, float]:
    """The same end for every trial, however many workers trained it: latency on this process's device (when
    asked), the selected checkpoint as a LoggedModel named like the trial's run (its params: the trial's values;
    `evaluated`: that checkpoint's final evaluation report, reused), the final metrics (linked to that model);
    returns the last Tune result."""
    if ctx.latency_batches:
        summary = {**summary, **latency_metrics(selected, ctx.budgets, ctx.latency_batches)}
    swept = {**{k: v for k, v in params.items() if k in SPECIAL_KEYS}, **trial_overrides(params, ctx.arms)}
    model_id, deployed = log_trial_model(ctx.tracking_uri, run_id, selected, ctx.budgets, git_commit(), name, swept,
                                         evaluated)
    log_final(ctx.tracking_uri, run_id, cfg, summary | deployed, model_id)
    return final_result(summary)


def stages_with_offsets(cfg: RunConfig) -> list[tuple[RunConfig, int]]:
    """A run's stages, each with the epochs of the stages before it (its MLflow step offset)."""
    stages, offset, out = stage_configs(cfg), 0, []
    for stage in stages:
        out.append((stage, offset))
        offset += stage.train.epochs
    return out


def _train_in_trial(cfg: RunConfig, ctx: TrialContext, run_id: str) -> tuple[dict[str, float], dict]:
    """Single-worker trials: the loop runs right here, on the trial's CPUs (and GPU, when it has one). Returns
    the final metrics and the evaluation report they come from."""
    import torch
    from ray import tune

    torch.set_num_threads(ctx.scaling.threads())
    pending = _restore_run_dir(tune.get_checkpoint(), cfg.run_dir)
    logger = EpochLogger(ctx.tracking_uri, run_id, pending)
    share = ctx.shared_stages and StageShare(ctx.shared_stages, storage_target(ctx.storage)[1], ctx.broker,
                                             tune.get_context().get_trial_id(), ctx.shared_keys)
    with system_metrics(ctx.tracking_uri, run_id):
        counts = run_stages(stages_with_offsets(cfg), lambda offset: TrialEpochReporter(cfg, logger, offset),
                            share or None)
    logger.flush_or_warn(cfg.name)
    report = final_evaluation(stage_configs(cfg)[-1], ctx.budgets)
    return {**summary_metrics(report), **counts}, report


def trial_metrics(metrics: dict[str, float], step_offset: int) -> dict[str, float]:
    """An epoch's metrics as a trial reports them: the step across stages and the score Tune schedules on."""
    return {**metrics, "step": step_offset + int(metrics["epoch"]), SCORE: score(metrics)}


class TrialEpochReporter:
    """End of every epoch of a single-worker trial: MLflow (queued while the server is down), then Tune with
    a checkpoint of the whole run directory (every stage, so a restart anywhere resumes)."""

    def __init__(self, cfg: RunConfig, logger: EpochLogger, step_offset: int):
        self.cfg, self.logger, self.step_offset = cfg, logger, step_offset

    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_path) -> None:
        import ray.tune

        metrics = trial_metrics(metrics, self.step_offset)
        self.logger.add(metrics)
        self.logger.flush()
        with tempfile.TemporaryDirectory() as folder:
            shutil.copytree(self.cfg.run_dir, Path(folder) / "run")
            (Path(folder) / "pending.json").write_text(json.dumps(self.logger.pending))
            ray.tune.report({k: v for k, v in metrics.items() if v is not None},
                            checkpoint=ray.tune.Checkpoint.from_directory(folder))


def _restore_run_dir(checkpoint, run_dir: Path) -> list[dict]:
    """The run directory as of the trial's last checkpoint (replacing whatever this node has); returns the
    epochs MLflow had not received."""
    if checkpoint is None:
        return []
    with local_copy(checkpoint) as folder:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        shutil.copytree(Path(folder) / "run", run_dir)
        return json.loads((Path(folder) / "pending.json").read_text())


@dataclass
class TrialHooks(RunHooks):
    """What a multi-worker trial's stage adds to a plain Ray Train run: global steps and the score in every
    epoch's report, and, after the last stage, the final evaluation (sharded over the ranks for an adaptive-depth
net) and `finish_trial` on rank 0 (the others report nothing new)."""
    step_offset: int
    ctx: TrialContext | None = None   # set on the last stage only
    name: str = ""                    # the trial's run name, `<arm>-s<seed>` in a paired grid
    params: dict = field(default_factory=dict)  # the trial's values

    def epoch_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        return trial_metrics(metrics, self.step_offset)

    def after_fit(self, cfg, tracking_uri: str, run_id: str, dist) -> dict[str, float] | None:
        if self.ctx is None:
            return None
        report = final_evaluation(cfg, self.ctx.budgets, dist)  # every rank evaluates its shard where it can
        if not dist.is_main:
            return {}
        from ...loop.trainer import best_checkpoint

        return finish_trial(cfg, self.ctx, run_id, best_checkpoint(cfg.run_dir), summary_metrics(report), self.name,
                            self.params, report)


def _train_with_torch_trainer(cfg: RunConfig, ctx: TrialContext, run_id: str, trial_id: str, params: dict) -> None:
    """Multi-worker trials: one TorchTrainer per stage, named after the trial, so that a restored trial's
    trainer resumes from its own latest checkpoint (Train V2 restores by storage path + name)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    stages = stages_with_offsets(cfg)
    result = None
    for index, (stage, offset) in enumerate(stages):
        last = index == len(stages) - 1
        result = build_trainer(stage, ctx.scaling, f"{ctx.sweep}-{trial_id}-{stage.name}", ctx.storage,
                               tracking_uri=ctx.tracking_uri, run_id=run_id, handoff=result.checkpoint if result else None,
                               hooks=TrialHooks(offset, ctx if last else None, cfg.name, params),
                               callbacks=[TuneReportCallback()], keep_checkpoints=1).fit()


def _selected_checkpoint(cfg: RunConfig) -> Path:
    from ...loop.trainer import best_checkpoint

    return best_checkpoint(stage_configs(cfg)[-1].run_dir)
