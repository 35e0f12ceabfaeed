"""Exit-loss weights of a multi-exit MSDNet: K free non-negative weights (normalised to sum K) or the
one-parameter scheme w_k ∝ (k/K)^p, optionally with Gradient Equilibrium on/off and its scope in the search
(Optuna TPE, ASHA on the held-out score). The final evaluation reports budgeted accuracy at 3 budgets.

  python sweeps/exit_weights.py --preset smoke --scheme power --search-ge
"""
import sys

from adaptnet.cluster.sweep.spaces import ExitWeightSpace, GESpace
from adaptnet.cluster.sweep.cli import CPU_DATA, SMOKE_DATA, Preset, cost_budgets, search_main

PRESETS = {
    "smoke": Preset("cifar10-smoke", ("model.name=msdnet_cifar_budgeted", *SMOKE_DATA), help="4 tiny trials on a CPU", trials=4),
    "cpu": Preset("cifar10-smoke", ("model.name=msdnet_cifar_budgeted", *CPU_DATA), help="16 trials on CIFAR-10 subsets",
                  trials=16),
    "paper-cifar100": Preset("cifar100-paper", help="48 trials of the CIFAR-100 recipe, 1 GPU each", trials=48,
                             gpus_per_worker=1, cpus_per_worker=4),
}


def flags(p):
    p.add_argument("--scheme", choices=["free", "power"], default="free",
                   help="free: one weight per exit; power: w_k ∝ (k/K)^p")
    p.add_argument("--search-ge", action="store_true", help="also search GE off / coarsest / all")
    p.add_argument("--objective", choices=["score", "latency"], default="score",
                   help="latency: NSGA-II of the held-out score against the measured early-exit latency per image at "
                        "the middle budget on the trial's device (first of --latency-batches)")


def objectives(args):
    from adaptnet.cluster.sweep.spec import Objective
    from adaptnet.cluster.tracking.results import SCORE
    from adaptnet.cluster.sweep.cli import SweepArgumentError

    if args.objective == "score":
        return None
    if not args.latency_batches:
        raise SweepArgumentError("--latency-batches: --objective latency needs batch sizes, e.g. 1,64")
    return (Objective(SCORE, "max"), Objective(f"final/latency_ms_budget2_b{args.latency_batches[0]}", "min"))


def space(args, base):
    from adaptnet.models import create_model

    exits = create_model(base["model"]["name"], **base["model"]["args"]).num_exits
    weights = ExitWeightSpace(num_exits=exits, scheme=args.scheme)
    return weights + GESpace() if args.search_ge else weights


if __name__ == "__main__":
    sys.exit(search_main(__doc__, PRESETS, "smoke", space, extra_flags=flags, budgets=cost_budgets,
                         objectives=objectives))
