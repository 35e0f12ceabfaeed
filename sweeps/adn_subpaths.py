"""ADN sub-path choices, multi-objective (Optuna NSGA-II): mandatory blocks per stage, skip-aware norms and
the self-distillation's α and T, for held-out accuracy of the base-net against its multiply-adds. After
training, every trial picks among its 2^S sub-networks the best (held-out) under 3 cost budgets; the sweep
reports the Pareto front of (base-net accuracy, base-net cost); `--objective latency|both --latency-batches 1,64`
makes the cost the base-net's measured latency on the trial's own device (or adds it).

  python sweeps/adn_subpaths.py --preset smoke
"""
import sys

from adaptnet.cluster.sweep.spaces import ADNSpace
from adaptnet.cluster.sweep.spec import Objective
from adaptnet.cluster.sweep.cli import CPU_DATA, SMOKE_DATA, Preset, cost_budgets, search_main

PRESETS = {
    "smoke": Preset("cifar10-resnet56-adn", SMOKE_DATA,
                    help="4 tiny ResNet-56 trials on a CPU", trials=4),
    "cpu": Preset("cifar10-resnet56-adn", CPU_DATA, help="12 ResNet-56 trials on CIFAR-10 subsets", trials=12),
    "paper-imagenet": Preset("resnet50-adn-paper", help="24 ResNet-50 trials, the ADN brief's recipe, 4 GPUs each",
                             trials=24, workers=4, gpus_per_worker=1, cpus_per_worker=8),
}
OBJECTIVES = (Objective("final/holdout_top1_base", "max"), Objective("final/macs_base", "min"))


def flags(p):
    p.add_argument("--objective", choices=["macs", "latency", "both"], default="macs",
                   help="cost objective of the base-net: multiply-adds, measured latency per image on the trial's "
                        "device at the first of --latency-batches, or both (NSGA-II over three objectives)")


def objectives(args):
    from adaptnet.cluster.sweep.cli import SweepArgumentError

    if args.objective == "macs":
        return OBJECTIVES
    if not args.latency_batches:
        raise SweepArgumentError(f"--latency-batches: --objective {args.objective} needs batch sizes, e.g. 1,64")
    latency = Objective(f"final/latency_ms_base_b{args.latency_batches[0]}", "min")
    return (OBJECTIVES[0], latency) if args.objective == "latency" else (*OBJECTIVES, latency)


def space(args, base):
    from adaptnet.models import create_model

    model = create_model(base["model"]["name"], **{k: v for k, v in base["model"]["args"].items() if k != "n_mandatory"})
    return ADNSpace(blocks_per_stage=tuple(len(stage) for stage in model.stages))


if __name__ == "__main__":
    sys.exit(search_main(__doc__, PRESETS, "smoke", space, objectives=objectives, extra_flags=flags,
                         budgets=lambda base: cost_budgets(base, (0.5, 0.7, 0.9))))
