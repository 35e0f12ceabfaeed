"""IMTA's one-for-all knowledge distillation: search the temperature T and the KD weight γ (Optuna TPE, ASHA
on the held-out score). Each trial runs both IMTA stages (GE backbone, then ISC + KD) from the same seed.

  python sweeps/kd_temperature.py --preset smoke
"""
import sys

from adaptnet.cluster.spaces import KDSpace
from adaptnet.cluster.sweep_cli import Preset, search_main

PRESETS = {
    "smoke": Preset("cifar10-imta", ("model.name=msdnet_cifar_budgeted", "data.train_subset=256", "data.holdout=128",
                                     "data.test_subset=256", "train.epochs=1"), help="4 tiny trials on a CPU", trials=4),
    "cpu": Preset("cifar10-imta", ("model.name=msdnet_cifar_budgeted", "data.train_subset=5000", "data.holdout=1000",
                                   "data.test_subset=2000", "train.epochs=3"), help="12 trials on CIFAR-10 subsets",
                  trials=12),
    "paper-cifar100": Preset("cifar100-imta-paper", help="32 trials of the CIFAR-100 recipe, 1 GPU each", trials=32,
                             gpus_per_worker=1, cpus_per_worker=4),
}


def space(args, base):
    # The brief's range: T in [1, 4] (official ImageNet 1.0, code default 3.0), γ in [0, 1].
    return KDSpace(temperature=(1.0, 4.0), gamma=(0.0, 1.0))


if __name__ == "__main__":
    sys.exit(search_main(__doc__, PRESETS, "smoke", space))
