"""Ray Tune sweeps over adaptnet runs, tracked in MLflow as one parent run with one child run per trial.

A trial is one `adaptnet train` run (every stage of it) whose config is the sweep's base config plus the
trial's overrides, validated by the same schema. Single-worker trials run the training loop inside the Tune
trial process (no TorchTrainer: its fixed start-up and teardown cost dominates small trials); multi-worker
trials build a Ray Train `TorchTrainer` per stage and report through `TuneReportCallback` (Train V2).
Every epoch a trial reports its metrics and a checkpoint of its run directory, so a trial restarts where it
stopped. Rerunning a sweep whose driver died restores it (`Tuner.restore`): finished trials are kept,
unfinished and errored ones resume from their last checkpoint, and their MLflow child runs are reused.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..deploy.latency import latency_metrics
from ..loop import ConfigError, RunConfig, build_config, stage_configs
from .spaces import Space, config_overrides, sample
from .storage import storage_target
from .models_registry import log_trial_model, register_sweep_models
from .tracking import EpochLogger, client, find_or_create_run, find_run, flatten, resolve_tracking_uri
from .views import sweep_params, system_metrics

SCORE = "score"            # mean held-out top-1 over a run's outputs (exits, or super/base): ASHA's and TPE's default
FINAL_MARK = "final/done"  # present in a trial's last result once its final evaluation is logged
TRIAL_TAG, SWEEP_TAG, NODE_TAG = "adaptnet.trial_id", "adaptnet.sweep", "adaptnet.node_id"  # node: where it first ran
PARENT_TAG = "mlflow.parentRunId"
SPECIAL_KEYS = ("arm", "seed")
# Tune saves the experiment state at most this often; short, so that a killed driver forgets little.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
# Multi-objective targets (e.g. a sub-network's cost) exist only in a trial's final result; Optuna reads
# nothing else for them, but Tune would reject every per-epoch result that lacks them.
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
# Every epoch checkpoints (that is what makes trials restartable); Tune's warning about it is noise.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str = "max"   # max | min


@dataclass
class SweepSpec:
    """What to sweep and where. Either `space` (Optuna search over `num_samples` trials) or `grid` (every
    combination of the listed values; the key `arm` picks a set of overrides from `arms`, the key `seed`
    sets both `train.seed` and `data.holdout_seed`, any other key is a config key)."""

    name: str
    base: dict                                   # a run-config tree, as for `adaptnet train`
    space: Space | None = None
    grid: dict[str, list] | None = None
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)
    objectives: tuple[Objective, ...] = (Objective(SCORE, "max"),)
    num_samples: int = 4
    asha: bool = False                           # early stopping on SCORE (epochs as time)
    seed: int = 0
    budgets: tuple[float, ...] = ()              # cost budgets of the final evaluation (multiply-adds)
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_concurrent: int | None = None            # default: what the cluster's resources fit
    storage: str | None = None                   # folder or s3://bucket/prefix; default ./ray_results
    tracking_uri: str | None = None
    experiment: str = "adaptnet-sweeps"
    parent_run_id: str | None = None             # several sweeps under one parent (ge_vs_baseline)
    tags: dict[str, str] = field(default_factory=dict)
    scratch: str | None = None                   # where trials keep their run directory on a node (see default_scratch)
    latency_batches: tuple[int, ...] = ()        # measure final/latency_ms_* at these batch sizes (objectives)

    def trial_count(self) -> int:
        return math.prod(len(v) for v in self.grid.values()) if self.grid else self.num_samples


@dataclass
class TrialSummary:
    trial_id: str
    name: str
    params: dict[str, Any]        # the trial's overrides (arm and seed included)
    metrics: dict[str, Any]       # its last result
    status: str                   # FINISHED, KILLED (stopped early) or FAILED
    config: dict | None = None    # its validated run config


@dataclass
class SweepResult:
    name: str
    trials: list[TrialSummary]
    parent_run_id: str
    objectives: tuple[Objective, ...]
    experiment_path: str

    def finished(self) -> list[TrialSummary]:
        return [t for t in self.trials if t.status == "FINISHED"]

    def best(self, metric: str | None = None, mode: str | None = None) -> TrialSummary | None:
        metric, mode = metric or self.objectives[0].metric, mode or self.objectives[0].mode
        ranked = [t for t in self.finished() if t.metrics.get(metric) is not None]
        if not ranked:
            return None
        return (max if mode == "max" else min)(ranked, key=lambda t: t.metrics[metric])

    def pareto_front(self) -> list[TrialSummary]:
        """Finished trials no other finished trial beats on every objective."""
        def beats(a: TrialSummary, b: TrialSummary) -> bool:
            better = [(a.metrics[o.metric] - b.metrics[o.metric]) * (1 if o.mode == "max" else -1) for o in self.objectives]
            return all(d >= 0 for d in better) and any(d > 0 for d in better)

        scored = [t for t in self.finished() if all(t.metrics.get(o.metric) is not None for o in self.objectives)]
        return [t for t in scored if not any(beats(other, t) for other in scored)]


# --- configs -------------------------------------------------------------------------------------------

def trial_overrides(params: dict[str, Any], arms: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A trial's Tune config → config overrides: the arm's overrides, the seed on both seeds, the rest as is."""
    overrides = dict(arms[params["arm"]]) if "arm" in params else {}
    if "seed" in params:
        overrides.update({"train.seed": params["seed"], "data.holdout_seed": params["seed"]})
    overrides.update({k: v for k, v in config_overrides(params).items() if k not in SPECIAL_KEYS})
    return overrides


def override_items(overrides: dict[str, Any]) -> list[str]:
    """{key: value} → the `section.key=value` strings of `adaptnet train` (values as YAML, so None stays null)."""
    import yaml

    return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
            for k, v in overrides.items()]


def trial_config(base: dict, overrides: dict[str, Any], name: str, output_dir: str) -> RunConfig:
    tree = {**base, "name": name, "output_dir": output_dir, "train": {**base["train"], "progress": False}}
    return build_config(tree, override_items(overrides))


def with_overrides(base: dict, overrides: dict[str, Any]) -> dict:
    """A base config tree with overrides applied and validated (still without a run name of its own)."""
    tree = trial_config(base, overrides, base.get("name", "sweep"), "runs").model_dump()
    tree.pop("output_dir")
    return tree


def validate(spec: SweepSpec, draws: int = 8) -> None:
    """Every config the sweep can produce passes the `adaptnet train` schema; raises ConfigError (one line,
    naming the sweep value) before any cluster work."""
    if (spec.space is None) == (spec.grid is None):
        raise ConfigError(f"sweep {spec.name}: give a search space or a grid, not both or neither")
    if spec.grid and "arm" in spec.grid:
        unknown = [a for a in spec.grid["arm"] if a not in spec.arms]
        if unknown:
            raise ConfigError(f"grid.arm: unknown arm {unknown[0]!r}; arms: {', '.join(spec.arms)}")
    if spec.grid:
        keys = list(spec.grid)
        candidates = [dict(zip(keys, values)) for values in _product([spec.grid[k] for k in keys])]
    else:
        candidates = sample(spec.space, draws, spec.seed)
    for params in candidates:
        try:
            trial_config(spec.base, trial_overrides(params, spec.arms), "validate", "runs")
        except ConfigError as err:
            shown = {k: v for k, v in params.items()}
            raise ConfigError(f"sweep {spec.name}: {err} (trial values {shown})") from None
    for objective in spec.objectives:
        if objective.mode not in ("max", "min"):
            raise ConfigError(f"objectives: mode must be max or min, got {objective.mode!r}")


def _product(lists: list[list]) -> list[tuple]:
    combos: list[tuple] = [()]
    for values in lists:
        combos = [c + (v,) for c in combos for v in values]
    return combos


# --- inside a trial --------------------------------------------------------------------------------------

def score(metrics: dict[str, float]) -> float | None:
    """Mean held-out top-1 over the run's outputs (test top-1 when there is no held-out split)."""
    for split in ("holdout", "test"):
        values = [v for k, v in metrics.items() if k.startswith(f"{split}/top1_")]
        if values:
            return sum(values) / len(values)
    return None


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


def final_result(summary: dict[str, float]) -> dict[str, float]:
    """A trial's last Tune result: the summary, its score (of the selected checkpoint) and the done mark."""
    return {**summary, SCORE: summary["final/holdout_top1_mean"], FINAL_MARK: 1.0}


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

    from ..loop import fit

    torch.set_num_threads(max(1, int(ctx.cpus_per_worker)))
    pending = _restore_run_dir(tune.get_checkpoint(), cfg.run_dir)
    logger = EpochLogger(ctx.tracking_uri, run_id, pending)
    with system_metrics(ctx.tracking_uri, run_id):
        for stage, offset in _stages_with_offsets(cfg):
            fit(stage, [TrialEpochReporter(cfg, logger, offset)])
    logger.flush_until(timeout_s=float(os.environ.get("ADAPTNET_MLFLOW_FLUSH_TIMEOUT_S", "300")))
    return final_summary(stage_configs(cfg)[-1], ctx.budgets)


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
    with checkpoint.as_directory() as folder:
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


def final_summary(last_stage: RunConfig, budgets: tuple[float, ...]) -> dict[str, float]:
    """Evaluation of the last stage's selected (held-out best) checkpoint as flat `final/...` metrics."""
    from ..loop.evaluate import evaluate_checkpoint, summary_metrics
    from ..loop.trainer import best_checkpoint

    report = evaluate_checkpoint(best_checkpoint(last_stage.run_dir), list(budgets), device="auto")
    return summary_metrics(report)


def log_final(tracking_uri: str, run_id: str, cfg: RunConfig, summary: dict[str, float]) -> None:
    """The trial's final metrics (step 0, the same keys in every arm) and its config; FINISHED."""
    import time

    import yaml
    from mlflow.entities import Metric

    mlflow = client(tracking_uri, fail_fast=True)
    now = int(time.time() * 1000)
    mlflow.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in summary.items()])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
        mlflow.log_artifact(run_id, str(path))
    mlflow.set_terminated(run_id, "FINISHED")


# --- the driver ------------------------------------------------------------------------------------------

def git_commit() -> str:
    """The repository's commit, else $ADAPTNET_GIT_COMMIT (jobs ship the tree without .git), else 'unknown'."""
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                               cwd=Path(__file__).resolve().parent)
        if found.returncode == 0:
            return found.stdout.strip()
    except OSError:
        pass
    return os.environ.get("ADAPTNET_GIT_COMMIT", "unknown")


def parent_run(spec: SweepSpec, run_key: str, preset: str = "") -> str:
    """The sweep's MLflow parent run (found again by its key on a rerun)."""
    tracking_uri = resolve_tracking_uri(spec.tracking_uri)
    return find_or_create_run(
        tracking_uri, spec.experiment, run_key=run_key, run_name=spec.name, params=sweep_params(spec),
        tags={SWEEP_TAG: spec.name, "adaptnet.git_commit": git_commit(), "adaptnet.preset": preset,
              "adaptnet.search_space": repr(spec.space) if spec.space else repr(spec.grid)[:5000],
              "adaptnet.objectives": ", ".join(f"{o.metric} ({o.mode})" for o in spec.objectives), **spec.tags})


def trial_resources(spec: SweepSpec, cluster: dict[str, float]) -> dict[str, float]:
    """What one Tune trial reserves: the worker's CPUs/GPU when it trains itself; for a multi-worker trial
    (the workers reserve their own) a `trial_driver` slot when the cluster has them, else a sliver of CPU."""
    if spec.workers == 1:
        return {"cpu": spec.cpus_per_worker, **({"gpu": spec.gpus_per_worker} if spec.gpus_per_worker else {})}
    return {"cpu": 0, "trial_driver": 1} if cluster.get("trial_driver") else {"cpu": 0.01}


def concurrency(spec: SweepSpec, cluster: dict[str, float]) -> int:
    """Trials that fit the cluster at once. A resource the cluster does not have yet (GPU workers of an
    autoscaling cluster) does not limit: pending trials are what makes the autoscaler add nodes."""
    if spec.max_concurrent:
        return spec.max_concurrent
    need = {"CPU": spec.workers * spec.cpus_per_worker + (0.01 if spec.workers > 1 and not cluster.get("trial_driver") else 0),
            "GPU": spec.workers * spec.gpus_per_worker}
    limits = [int(cluster[r] // amount) for r, amount in need.items() if amount and cluster.get(r)]
    if spec.workers > 1 and cluster.get("trial_driver"):
        limits.append(int(cluster["trial_driver"]))
    return max(1, min(limits + [spec.trial_count()]))


def _searcher(spec: SweepSpec):
    if spec.grid:
        return None
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    metrics = [o.metric for o in spec.objectives]
    modes = [o.mode for o in spec.objectives]
    if len(metrics) == 1:
        # TPE; Optuna's default of 10 random start-up trials would make small sweeps plain random search.
        sampler = optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=max(2, min(10, spec.num_samples // 3)))
        return OptunaSearch(space=spec.space, metric=metrics[0], mode=modes[0], sampler=sampler)
    sampler = optuna.samplers.NSGAIISampler(seed=spec.seed, population_size=max(2, min(50, spec.num_samples // 2)))
    return OptunaSearch(space=spec.space, metric=metrics, mode=modes, sampler=sampler)


def _scheduler(spec: SweepSpec, max_epochs: int):
    if not spec.asha:
        return None
    from ray.tune.schedulers import ASHAScheduler

    # time = reports; each epoch is one, the final evaluation one more
    return ASHAScheduler(time_attr="training_iteration", metric=SCORE, mode="max", max_t=max_epochs + 1,
                         grace_period=1, reduction_factor=2)


def default_scratch() -> str:
    """Where trials keep run directories on their node: $ADAPTNET_SCRATCH, else the temp folder."""
    return os.environ.get("ADAPTNET_SCRATCH") or str(Path(tempfile.gettempdir()) / "adaptnet-sweeps")


def run_sweep(spec: SweepSpec, preset: str = "") -> SweepResult:
    """Runs (or, after a dead driver, restores and finishes) a sweep on the Ray cluster this process is
    connected to; returns every trial and logs the summary to the MLflow parent run."""
    import ray
    from ray import tune

    validate(spec)
    dataset = spec.base["data"]["dataset"]
    if Path(dataset).exists():  # trials do not start in this directory
        spec.base = {**spec.base, "data": {**spec.base["data"], "dataset": str(Path(dataset).resolve())}}
    storage_path, filesystem = storage_target(spec.storage)
    tracking_uri = resolve_tracking_uri(spec.tracking_uri)
    sweep_key = f"{storage_path}/{spec.name}"
    parent_id = spec.parent_run_id or parent_run(spec, run_key=f"sweep:{sweep_key}", preset=preset)
    cluster = ray.cluster_resources()
    ctx = TrialContext(sweep=spec.name, sweep_key=sweep_key, base=spec.base, arms=spec.arms, tracking_uri=tracking_uri,
                       experiment=spec.experiment, parent_run_id=parent_id, budgets=tuple(spec.budgets),
                       workers=spec.workers, cpus_per_worker=spec.cpus_per_worker, gpus_per_worker=spec.gpus_per_worker,
                       storage=spec.storage, scratch=spec.scratch or default_scratch(),
                       latency_batches=tuple(spec.latency_batches))
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), trial_resources(spec, cluster))
    experiment_path = f"{storage_path.rstrip('/')}/{spec.name}"
    if tune.Tuner.can_restore(experiment_path, storage_filesystem=filesystem):
        sys.stdout.write(f"[{spec.name}] restoring the sweep from {experiment_path}\n")
        tuner = tune.Tuner.restore(experiment_path, trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=filesystem)
    else:
        max_epochs = sum(s.train.epochs for s in stage_configs(trial_config(spec.base, {}, "probe", "runs")))
        param_space = {k: tune.grid_search(v) for k, v in spec.grid.items()} if spec.grid else None
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(search_alg=_searcher(spec), scheduler=_scheduler(spec, max_epochs),
                                        num_samples=1 if spec.grid else spec.num_samples,
                                        max_concurrent_trials=concurrency(spec, cluster),
                                        # a stopped multi-worker trial must take its TorchTrainer down with its actor
                                        reuse_actors=spec.workers == 1),
            run_config=tune.RunConfig(name=spec.name, storage_path=storage_path, storage_filesystem=filesystem,
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                      failure_config=tune.FailureConfig(max_failures=1), verbose=0))
    grid = tuner.fit()
    result = SweepResult(spec.name, _summaries(grid, spec), parent_id, spec.objectives, experiment_path)
    reconcile_children(tracking_uri, parent_id, spec.name, result)
    register_sweep_models(tracking_uri, result)
    return result


def _summaries(grid, spec: SweepSpec) -> list[TrialSummary]:
    trials = []
    for res in grid:
        params = dict(res.config or {})
        metrics = dict(res.metrics or {})
        trial_id = metrics.get("trial_id") or Path(res.path).name
        status = "FAILED" if res.error else "FINISHED" if metrics.get(FINAL_MARK) else "KILLED"
        name = f"{params['arm']}-s{params['seed']}" if {"arm", "seed"} <= set(params) else trial_id
        try:
            config = trial_config(spec.base, trial_overrides(params, spec.arms), name, "runs").model_dump()
        except (ConfigError, KeyError):
            config = None
        trials.append(TrialSummary(trial_id, name, params, metrics, status, config))
    return trials


def reconcile_children(tracking_uri: str, parent_id: str, sweep: str, result: SweepResult) -> None:
    """Exactly one child run per trial: a child whose trial Tune no longer knows (its driver died before
    saving the trial) is deleted; every other child gets its trial's final status (KILLED = stopped early)."""
    mlflow = client(tracking_uri)
    parent = mlflow.get_run(parent_id)
    status = {t.trial_id: t.status for t in result.trials}
    children = mlflow.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}' and tags.`{SWEEP_TAG}` = '{sweep}'",
                                  max_results=50000)
    for run in children:
        trial_id = run.data.tags.get(TRIAL_TAG)
        if trial_id not in status:
            mlflow.delete_run(run.info.run_id)
        elif run.info.status != status[trial_id]:
            mlflow.set_terminated(run.info.run_id, status[trial_id])


def child_runs(tracking_uri: str, parent_id: str, sweep: str | None = None) -> list:
    mlflow = client(tracking_uri)
    parent = mlflow.get_run(parent_id)
    query = f"tags.`{PARENT_TAG}` = '{parent_id}'" + (f" and tags.`{SWEEP_TAG}` = '{sweep}'" if sweep else "")
    return mlflow.search_runs([parent.info.experiment_id], filter_string=query, max_results=50000)
