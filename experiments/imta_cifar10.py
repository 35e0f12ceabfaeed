"""Baseline vs Gradient Equilibrium vs full IMTA on real CIFAR-10, short schedule, several seeds (CPU).

Prints per-exit test top-1 and the budgeted curve's mean accuracy per run and averaged over seeds.
The IMTA rows are stage 2 trained on top of the GE rows' checkpoints (the GE run is IMTA's stage 1).
Runs resume from their checkpoints, so an interrupted experiment continues where it stopped.

Usage: python experiments/imta_cifar10.py [--dataset SPEC] [--seeds 0 1] [--epochs 2] [--train-subset 4000]
"""
import argparse
import os
import statistics

from adaptnet.loop import build_config, fit, read_yaml
from adaptnet.loop.evaluate import evaluate_checkpoint
from adaptnet.loop.trainer import best_checkpoint, selected_checkpoint

VARIANTS = ("baseline", "ge", "imta")


def configs(args, seed):
    base = read_yaml("cifar10-smoke")
    common = [f"data.dataset={args.dataset}", f"output_dir={args.out}", f"train.epochs={args.epochs}",
              f"train.seed={seed}", f"data.train_subset={args.train_subset}", "data.holdout=1000",
              "data.test_subset=2000", "train.progress=false"]
    baseline = build_config(base, common + [f"name=baseline-s{seed}"])
    ge = build_config(base, common + [f"name=ge-s{seed}", "model.ge_scope=coarsest"])
    stage1 = str(selected_checkpoint(ge))
    imta = build_config(base, common + [f"name=imta-s{seed}", "model.ge_scope=coarsest", "technique=imta_stage2",
                                        f"imta.stage1_checkpoint={stage1}", f"data.split_from={stage1}"])
    return {"baseline": baseline, "ge": ge, "imta": imta}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=os.environ.get("ADAPTNET_DATASET", "cifar10"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-subset", type=int, default=4000)
    parser.add_argument("--out", default="runs/experiments/imta_cifar10")
    args = parser.parse_args()

    results = {}
    for seed in args.seeds:
        for variant, cfg in configs(args, seed).items():  # in order: IMTA needs the GE checkpoint
            print(f"training {cfg.name} ...", flush=True)
            fit(cfg)
            results[(variant, seed)] = evaluate_checkpoint(best_checkpoint(cfg.run_dir), device="cpu")

    exits = len(next(iter(results.values()))["anytime"]["top1"])
    header = f"{'run':<14}" + "".join(f"{'exit' + str(k + 1):>8}" for k in range(exits)) + f"{'budgeted':>10}"
    print("\ntest top-1 (%) per exit; budgeted = mean accuracy over the budgeted curve's cost range")
    print(header)
    for (variant, seed), r in results.items():
        print(f"{variant + ' s' + str(seed):<14}" + "".join(f"{a:>8.2f}" for a in r["anytime"]["top1"])
              + f"{r['budgeted']['area']:>10.2f}")
    for variant in VARIANTS:
        runs = [r for (v, _), r in results.items() if v == variant]
        means = [statistics.mean(r["anytime"]["top1"][k] for r in runs) for k in range(exits)]
        area = statistics.mean(r["budgeted"]["area"] for r in runs)
        print(f"{variant + ' mean':<14}" + "".join(f"{a:>8.2f}" for a in means) + f"{area:>10.2f}")


if __name__ == "__main__":
    main()
