"""What a sweep is (`SweepSpec`) and what it gives back (`SweepResult` of `TrialSummary`s)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .spaces import Space
from ..tracking.results import SCORE


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
    share_stages: bool = True                    # train equal stages of different trials once (stage_share)
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
