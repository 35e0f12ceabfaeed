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

import os
import sys
import tempfile
from pathlib import Path

from ...loop import ConfigError, RunConfig, stage_configs
from ...loop.config import safe_name
from ..environ import scoped_environ
from ..run.storage import storage_target
from ..run.trainer import Scaling
from ..tracking.models import register_sweep_models
from ..tracking.results import FINAL_MARK, SCORE
from ..tracking.runs import PARENT_TAG, SWEEP_TAG, TRIAL_TAG, git_commit
from ..tracking.store import client, find_or_create_run, resolve_tracking_uri, search_exact
from ..tracking.views import sweep_params
from .config import grid_params, trial_config, trial_name, trial_overrides
from .spaces import sample
from .spec import SweepResult, SweepSpec, TrialSummary
from .stage_share import broker, repeated_stage_keys, reuse_line
from .trial import TrialContext, run_trial, stages_with_offsets

TUNE_ENV = {
    # Tune saves the experiment state at most this often; short, so that a killed driver forgets little.
    "TUNE_GLOBAL_CHECKPOINT_S": "2",
    # Multi-objective targets (e.g. a sub-network's cost) exist only in a trial's final result; Optuna reads
    # nothing else for them, but Tune would reject every per-epoch result that lacks them.
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # Every epoch checkpoints (that is what makes trials restartable); Tune's warning about it is noise.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # Tune's newer console output prints its configuration box and result paths even at verbose=0; with the
    # classic output verbose=0 is silent, and the progress callback (progress.py) says what a user needs.
    "RAY_AIR_NEW_OUTPUT": "0",
}


def validate(spec: SweepSpec, draws: int = 8) -> None:
    """Every config the sweep can produce passes the `adaptnet train` schema; raises ConfigError (one line,
    naming the sweep value) before any cluster work."""
    try:
        safe_name(spec.name)
    except ValueError as err:
        raise ConfigError(f"sweep name: {err} (got {spec.name!r})") from None
    if (spec.space is None) == (spec.grid is None):
        raise ConfigError(f"sweep {spec.name}: give a search space or a grid, not both or neither")
    if spec.grid and "arm" in spec.grid:
        unknown = [a for a in spec.grid["arm"] if a not in spec.arms]
        if unknown:
            raise ConfigError(f"grid.arm: unknown arm {unknown[0]!r}; arms: {', '.join(spec.arms)}")
    candidates = grid_params(spec.grid) if spec.grid else sample(spec.space, draws, spec.seed)
    for params in candidates:
        try:
            trial_config(spec.base, trial_overrides(params, spec.arms), "validate", "runs")
        except ConfigError as err:
            shown = {k: v for k, v in params.items()}
            raise ConfigError(f"sweep {spec.name}: {err} (trial values {shown})") from None
    for objective in spec.objectives:
        if objective.mode not in ("max", "min"):
            raise ConfigError(f"objectives: mode must be max or min, got {objective.mode!r}")


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
                       scaling=Scaling(spec.workers, spec.cpus_per_worker, spec.gpus_per_worker),
                       storage=spec.storage, scratch=spec.scratch or default_scratch(),
                       latency_batches=tuple(spec.latency_batches))
    repeated = repeated_stage_keys([_stages_of(spec, ctx.scratch, p) for p in grid_params(spec.grid)]) if spec.grid else set()
    if spec.share_stages and spec.workers == 1 and repeated:
        ctx.shared_stages, ctx.broker = f"{storage_path.rstrip('/')}/{spec.name}-stages", broker(spec.name)
        ctx.shared_keys = repeated
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
                                      callbacks=[_progress(spec, ctx)],
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                      failure_config=tune.FailureConfig(max_failures=1), verbose=0))
    with scoped_environ(TUNE_ENV, override=False):
        grid = tuner.fit()
    result = SweepResult(spec.name, _summaries(grid, spec), parent_id, spec.objectives, experiment_path)
    reconcile_children(tracking_uri, parent_id, spec.name, result)
    if ctx.broker:
        sys.stdout.write(f"[{spec.name}] {reuse_line(result.trials)}\n")
    register_sweep_models(tracking_uri, result)
    return result


def _stages_of(spec: SweepSpec, scratch: str, params: dict) -> list[tuple[RunConfig, int]]:
    """A trial's stages as its process will build them (for stage keys and progress lines)."""
    return stages_with_offsets(trial_config(spec.base, trial_overrides(params, spec.arms), trial_name(params, "trial"),
                                            str(Path(scratch).resolve() / spec.name / "probe")))


def _progress(spec: SweepSpec, ctx: TrialContext):
    """The driver's trial k/N and time-left lines (progress.py)."""
    from .progress import sweep_progress

    plain = SweepSpec(spec.name, spec.base, grid=spec.grid, arms=spec.arms, num_samples=spec.num_samples)
    scratch = ctx.scratch  # the callback is pickled with the Tuner's state: plain values only, no actor handle
    return sweep_progress(plain, lambda params: _stages_of(plain, scratch, params), share=ctx.broker is not None)


def _summaries(grid, spec: SweepSpec) -> list[TrialSummary]:
    trials = []
    for res in grid:
        params = dict(res.config or {})
        metrics = dict(res.metrics or {})
        trial_id = metrics.get("trial_id") or Path(res.path).name
        status = "FAILED" if res.error else "FINISHED" if metrics.get(FINAL_MARK) else "KILLED"
        name = trial_name(params, trial_id)
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
    children = search_exact(mlflow, [parent.info.experiment_id], {f"tags.{PARENT_TAG}": parent_id,
                                                                 f"tags.{SWEEP_TAG}": sweep})
    for run in children:
        trial_id = run.data.tags.get(TRIAL_TAG)
        if trial_id not in status:
            mlflow.delete_run(run.info.run_id)
        elif run.info.status != status[trial_id]:
            mlflow.set_terminated(run.info.run_id, status[trial_id])
