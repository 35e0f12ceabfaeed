"""Baseline MSDNet vs Gradient Equilibrium vs full IMTA (GE stage 1, then ISC + KD stage 2), N paired seeds;
`--arms` adds IMTA's ablation: GE + ISC without KD (ge-isc) and ISC + KD on a plain backbone (isc-kd).

Runs of the same seed share the held-out split and the data order in every arm. Optionally tunes each arm's
learning rate with Optuna (TPE, ASHA) on the held-out split first. Prints, and logs to the MLflow parent run,
per exit: mean ± 95% CI per arm and the paired difference against the baseline with its CI, plus the
budgeted accuracy at 3 budgets. Rerun the same command after an interruption: finished runs are kept.

  python sweeps/ge_vs_baseline.py --preset smoke
  ray job submit --runtime-env clusters/runtime_env.yaml -- python sweeps/ge_vs_baseline.py --preset paper-cifar100
"""
from __future__ import annotations

import sys

from adaptnet.cluster.sweep.cli import SMOKE_DATA, Preset
from adaptnet.cluster.sweep.paired import Comparison, paired_main

ARMS = {  # IMTA's ablation; two-stage arms share stage 1 with the one-stage arm of their backbone (and seed)
    "baseline": {"technique": "multi_exit", "model.ge_scope": None},
    "ge": {"technique": "multi_exit", "model.ge_scope": "coarsest"},
    "ge-isc": {"technique": "imta_two_stage", "model.ge_scope": "coarsest", "imta.gamma": 0.0},  # ISC, no KD
    "isc-kd": {"technique": "imta_two_stage", "model.ge_scope": None},  # ISC + KD on the plain backbone
    "imta": {"technique": "imta_two_stage", "model.ge_scope": "coarsest"},  # GE + ISC + KD
}
DEFAULT_ARMS = "baseline,ge,imta"
PRESETS = {
    "smoke": Preset("cifar10-imta", ("model.name=msdnet_cifar_budgeted", *SMOKE_DATA),
                    help="minutes on a CPU: tiny subsets, 1 epoch per stage, 2 seeds", seeds=2, trials=0),
    "cpu": Preset("cifar10-imta", ("model.name=msdnet_cifar_budgeted", "data.train_subset=2500", "data.holdout=500",
                                   "data.test_subset=1000", "train.epochs=3", "train.batch_size=64"),
                  help="the demo: real CIFAR-10 subsets, 3 epochs per stage, 3 seeds (~12 min on a quiet 2-core machine)",
                  seeds=3, trials=0),
    "paper-cifar100": Preset("cifar100-imta-paper", help="the IMTA brief's CIFAR-100 recipe (300+300 epochs), "
                             "5 seeds, 1 GPU per trial", seeds=5, trials=0, gpus_per_worker=1, cpus_per_worker=4),
    "paper-imagenet": Preset("imagenet-imta-paper", help="ImageNet MSDNet step 4 (90+90 epochs), 3 seeds, "
                             "4 GPUs per trial (DDP)", seeds=3, trials=0, workers=4, gpus_per_worker=1,
                             cpus_per_worker=8),
}


def labels(finished: list[dict], budgets: list[float]) -> dict[str, str]:
    """Per exit, the budgeted curve's mean and each budget's accuracy: final metric key → table label."""
    exits = sorted({k for metrics in finished for k in metrics if k.startswith("final/test_top1_exit")},
                   key=lambda k: int(k.rsplit("exit", 1)[1]))
    out = {k: k.rsplit("_", 1)[1] for k in exits}  # final/test_top1_exit3 → exit3
    out["final/budgeted_area"] = "budgeted mean"
    out.update({f"final/budget{i + 1}_test_top1": f"@{b / 1e6:.1f}M MACs" for i, b in enumerate(budgets)})
    return out


COMPARISON = Comparison(
    script="ge_vs_baseline", doc=__doc__, arms=ARMS, default_arms=DEFAULT_ARMS, required_arm="baseline",
    presets=PRESETS, default_preset="cpu", labels=labels, baseline_of=lambda label: "baseline",
    notes="budgeted mean: mean accuracy over the budgeted curve; @B: budgeted accuracy at B multiply-adds per image "
          "(thresholds from the held-out split)",
    scale_hint=lambda preset: ("more seeds at this scale measure this scale only; the papers' differences need their "
                               "scale: --preset paper-cifar100 on GPUs" if preset != "paper-cifar100" else ""),
    arm_help=f"comma-separated subset of {','.join(ARMS)} (default {DEFAULT_ARMS}): ge-isc is GE + ISC without KD "
             "(γ = 0), isc-kd is ISC + KD on a plain (non-GE) backbone, imta is GE + ISC + KD")

if __name__ == "__main__":
    sys.exit(paired_main(COMPARISON))
