"""IMTA's one-for-all knowledge distillation: search the temperature T and the KD weight γ (Optuna TPE, ASHA
on the held-out score). Each trial runs both IMTA stages (GE backbone, then ISC + KD) from the same seed.

  python sweeps/kd_temperature.py --preset smoke
"""
import sys

from adaptnet.cluster.sweep.spaces import KDSpace
from adaptnet.cluster.sweep.cli import CPU_DATA, SMOKE_DATA, Preset, search_main

PRESETS = {
    "smoke": Preset("cifar10-imta", ("model.name=msdnet_cifar_budgeted", *SMOKE_DATA), help="4 tiny trials on a CPU", trials=4),
    "cpu": Preset("cifar10-imta", ("model.name=msdnet_cifar_budgeted", *CPU_DATA), help="12 trials on CIFAR-10 subsets",
                  trials=12),
    "paper-cifar100": Preset("cifar100-imta-paper", help="32 trials of the CIFAR-100 recipe, 1 GPU each", trials=32,
                             gpus_per_worker=1, cpus_per_worker=4),
}


def space(args, base):
    # The brief's range: T in [1, 4] (official ImageNet 1.0, code default 3.0), γ in [0, 1].
    return KDSpace(temperature=(1.0, 4.0), gamma=(0.0, 1.0))


if __name__ == "__main__":
    sys.exit(search_main(__doc__, PRESETS, "smoke", space))
