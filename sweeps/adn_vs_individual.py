"""ADN's headline claim: each sub-network of an adaptive-depth network beats a network of the same depth trained
on its own (Kang & Lee, NeurIPS 2024, adn.md §4.3), over N paired seeds.

Arms: adn (super→base self-distillation), individual (the same network trained plainly, every block),
individual-base (only the mandatory blocks, the base-net's depth, trained alone) and kd-individual (that
base-depth network distilled from a trained super-net, the paper's "KD individual"; its stage 1 is the individual
arm's run of the seed, trained once); `--arms` may add adn-ce (ADN without self-distillation, brief §8). Prints super vs individual and base vs individual-base (and
kd-individual) with paired Δ and 95% CI, every sub-network of the ADN arm, and the paper's numbers where the
setting is the paper's; logs them to the MLflow parent run. Rerun the same command to resume.

  python sweeps/adn_vs_individual.py --preset smoke
  ray job submit --runtime-env clusters/runtime_env.yaml -- python sweeps/adn_vs_individual.py --preset paper-resnet50
"""
from __future__ import annotations

import sys

from adaptnet.cluster.sweep.cli import SMOKE_DATA, Preset
from adaptnet.cluster.sweep.paired import Comparison, paired_main

ARMS = {
    "adn": {"technique": "adn_distill"},
    "individual": {"technique": "single_depth", "adn.depth": "super"},
    "individual-base": {"technique": "single_depth", "adn.depth": "base"},
    "kd-individual": {"technique": "adn_kd_individual"},
    "adn-ce": {"technique": "adn_distill", "adn.student_loss": "ce"},  # brief §8: the base-net learns from labels
}
DEFAULT_ARMS = "adn,individual,individual-base,kd-individual"
GPU_TRIAL = {"workers": 4, "gpus_per_worker": 1, "cpus_per_worker": 8}  # one g5.12xlarge (4 × A10G) per trial
PRESETS = {
    "smoke": Preset("cifar10-resnet56-adn", SMOKE_DATA, help="minutes on a CPU: tiny subsets, 1 epoch, 2 seeds",
                    seeds=2, trials=0),
    # A 1-epoch warm-up for every arm: without it ResNet-56 trained plainly at lr 0.1 does not start learning in 3
    # epochs (its loss stays at ln 10), which would flatter ADN, whose super-net CE carries only α = 0.5.
    "cpu": Preset("cifar10-resnet56-adn", ("data.train_subset=2000", "data.holdout=500", "data.test_subset=1000",
                                           "train.epochs=3", "train.batch_size=64", "optim.warmup_epochs=1"),
                  help="real CIFAR-10 subsets, ResNet-56-ADN, 3 epochs (1 of warm-up), 3 seeds (CPU minutes)", seeds=3,
                  trials=0),
    "paper-resnet50": Preset("resnet50-adn-paper", help="ImageNet ResNet50-ADN, 150 epochs, 3 seeds, 4 GPUs per trial",
                             seeds=3, trials=0, **GPU_TRIAL),
    "paper-mbv2": Preset("mbv2-adn-paper", help="ImageNet MobileNetV2-ADN, 300 epochs, 3 seeds, 4 GPUs per trial",
                         seeds=3, trials=0, **GPU_TRIAL),
    "paper-swin-t": Preset("swin-t-adn-paper", help="ImageNet Swin-T-ADN, 300 epochs, 3 seeds, 4 GPUs per trial",
                           seeds=3, trials=0, **GPU_TRIAL),
    "paper-vit-b16": Preset("vit-b16-adn-paper", help="ImageNet ViT-b/16-ADN, 300 epochs, 3 seeds, 4 GPUs per trial",
                            seeds=3, trials=0, **GPU_TRIAL),
}
# each depth's rows: (the arm compared against, the arms shown)
DEPTHS = {"super": ("individual", ["adn", "adn-ce", "individual"]),
          "base": ("individual-base", ["adn", "adn-ce", "individual-base", "kd-individual"])}


def labels(finished: list[dict], budgets: list[float]) -> dict[str, str]:
    """super and base, then the ADN arm's other sub-networks by skip code (FTF: stage 2's skippable blocks off)."""
    codes = sorted({k.removeprefix("final/test_top1_") for metrics in finished for k in metrics
                    if k.startswith("final/test_top1_") and set(k.removeprefix("final/test_top1_")) <= {"T", "F"}})
    inner = [c for c in codes if "T" in c and "F" in c]  # all-F is the super-net, all-T the base-net
    return {"final/test_top1_super": "super", "final/test_top1_base": "base",
            **{f"final/test_top1_{c}": c for c in sorted(inner, key=lambda c: (c.count("T"), c))}}


COMPARISON = Comparison(
    script="adn_vs_individual", doc=__doc__, arms=ARMS, default_arms=DEFAULT_ARMS, required_arm="adn",
    presets=PRESETS, default_preset="smoke", labels=labels,
    baseline_of=lambda label: DEPTHS.get(label, ("adn",))[0],
    arms_of=lambda label, arms: DEPTHS.get(label, (None, ["adn"]))[1],
    baseline_name="the individual network of its depth",
    plots=lambda arm, output: arm.startswith("adn") or set(output) == ({"F"} if arm == "individual" else {"T"}),
    notes="super: Δ against individual (the same network trained alone); base: against individual-base (only the "
          "mandatory blocks, trained alone); FTF…: the ADN arm's other sub-networks (T: that stage's skippable "
          "blocks skipped)",
    scale_hint=lambda preset: ("" if preset.startswith("paper-") else
                               "the paper's gains (+0.1 to +1.9 points) need its scale: --preset paper-resnet50 on GPUs"),
    arm_help=f"comma-separated subset of {','.join(ARMS)} that includes adn (default {DEFAULT_ARMS}); adn-ce is ADN "
             "without self-distillation (the base-net learns from the labels)", tune_lr=False)

if __name__ == "__main__":
    sys.exit(paired_main(COMPARISON))
