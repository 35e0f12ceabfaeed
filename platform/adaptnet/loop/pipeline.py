"""Runs made of several trainings: the two-stage IMTA pipeline (GE backbone, then ISC + KD) and ADN's "KD
individual" (a super-net trained alone, then the base depth distilled from it)."""
from __future__ import annotations

from .config import RunConfig, build_config
from .trainer import Callback, Distributed, FitResult, fit, selected_checkpoint

# pipeline technique: (stage 1's technique and overrides, stage 2's technique, the config field naming stage 1)
PIPELINES = {"imta_two_stage": ("multi_exit", {}, "imta_stage2", ("imta", "stage1_checkpoint")),
             "adn_kd_individual": ("single_depth", {"adn": {"depth": "super"}}, "depth_kd", ("adn", "teacher_checkpoint"))}


def with_stage1(tree: dict, checkpoint: str) -> dict:
    """A stage-2 config tree pointed at its stage-1 checkpoint: its starting weights or teacher, and its split."""
    technique = next(p for p in PIPELINES.values() if p[2] == tree["technique"])
    section, key = technique[3]
    return {**tree, section: {**tree[section], key: checkpoint},
            "data": {**tree["data"], "split_from": checkpoint}}  # the SAME held-out split


def stage_configs(cfg: RunConfig) -> list[RunConfig]:
    """The trainings a config stands for: itself, or a pipeline's stage 1 and stage 2 under its run directory."""
    if cfg.technique not in PIPELINES:
        return [cfg]
    first, overrides, second, _ = PIPELINES[cfg.technique]
    tree = cfg.model_dump()
    stage1 = build_config({**tree, "name": "stage1", "output_dir": str(cfg.run_dir), "technique": first,
                           **{section: {**tree[section], **values} for section, values in overrides.items()}})
    stage2_tree = {**tree, "name": "stage2", "output_dir": str(cfg.run_dir), "technique": second,
                   "adn": {**tree["adn"], "depth": "base"} if second == "depth_kd" else tree["adn"],
                   "train": {**tree["train"], "epochs": (cfg.imta.stage2_epochs if second == "imta_stage2" else None)
                             or cfg.train.epochs}}
    return [stage1, build_config(with_stage1(stage2_tree, str(selected_checkpoint(stage1))))]


def run(cfg: RunConfig, callbacks: list[Callback] = (), dist: Distributed | None = None) -> list[FitResult]:
    """Trains every stage in order (each resumes from its own checkpoints) and returns their results."""
    return [fit(stage, callbacks, dist) for stage in stage_configs(cfg)]
