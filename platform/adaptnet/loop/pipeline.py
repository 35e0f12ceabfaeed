"""Runs made of several trainings: the two-stage IMTA pipeline (GE backbone, then ISC + KD)."""
from __future__ import annotations

from .config import RunConfig, build_config
from .trainer import Callback, Distributed, FitResult, fit, selected_checkpoint


def stage_configs(cfg: RunConfig) -> list[RunConfig]:
    """The trainings a config stands for: itself, or IMTA's stage 1 and stage 2 under its run directory."""
    if cfg.technique != "imta_two_stage":
        return [cfg]
    tree = cfg.model_dump()
    stage1 = build_config({**tree, "name": "stage1", "output_dir": str(cfg.run_dir), "technique": "multi_exit"})
    stage1_checkpoint = str(selected_checkpoint(stage1))
    stage2_tree = {**tree, "name": "stage2", "output_dir": str(cfg.run_dir), "technique": "imta_stage2",
                   "imta": {**tree["imta"], "stage1_checkpoint": stage1_checkpoint},
                   "data": {**tree["data"], "split_from": stage1_checkpoint},   # the SAME held-out split
                   "train": {**tree["train"], "epochs": cfg.imta.stage2_epochs or cfg.train.epochs}}
    return [stage1, build_config(stage2_tree)]


def run(cfg: RunConfig, callbacks: list[Callback] = (), dist: Distributed | None = None) -> list[FitResult]:
    """Trains every stage in order (each resumes from its own checkpoints) and returns their results."""
    return [fit(stage, callbacks, dist) for stage in stage_configs(cfg)]
