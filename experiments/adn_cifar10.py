"""ResNet-56-ADN on real CIFAR-10, short schedule: with self-distillation (KD from the super-net) vs without
(the base-net learns from the labels, brief §8's ablation). Prints super and base test accuracy and the
table of all 8 sub-networks. Runs resume from their checkpoints.

Usage: python experiments/adn_cifar10.py [--dataset SPEC] [--epochs 2] [--train-subset 4000] [--seed 0]
"""
import argparse
import os

from adaptnet.loop import fit, load_config
from adaptnet.loop.evaluate import evaluate_checkpoint
from adaptnet.loop.trainer import best_checkpoint

VARIANTS = {"self-distilled": "kd", "no-distillation": "ce"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=os.environ.get("ADAPTNET_DATASET", "cifar10"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-subset", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/experiments/adn_cifar10")
    args = parser.parse_args()

    reports = {}
    for variant, student_loss in VARIANTS.items():
        cfg = load_config("cifar10-resnet56-adn", [
            f"name={variant}", f"output_dir={args.out}", f"data.dataset={args.dataset}", f"train.epochs={args.epochs}",
            f"data.train_subset={args.train_subset}", f"train.seed={args.seed}", f"adn.student_loss={student_loss}",
            "train.progress=false"])
        print(f"training {variant} ...", flush=True)
        fit(cfg)
        reports[variant] = evaluate_checkpoint(best_checkpoint(cfg.run_dir), device="cpu")

    print(f"\n{'run':<16}{'super top1':>11}{'base top1':>11}")
    for variant, report in reports.items():
        rows = {r["skip"]: r for r in report["subnets"]}
        print(f"{variant:<16}{rows['FFF']['test_top1']:>11.2f}{rows['TTT']['test_top1']:>11.2f}")
    for variant, report in reports.items():
        print(f"\n{variant}: every sub-network (T = skippable sub-path skipped); * = held-out Pareto front")
        print(f"{'skip':<6}{'MMACs':>9}{'Mparams':>9}{'holdout':>9}{'test top1':>10}{'test top5':>10}")
        for r in sorted(report["subnets"], key=lambda r: -r["macs"]):
            mark = "*" if r["skip"] in report["pareto_front"] else " "
            print(f"{r['skip'] + mark:<6}{r['macs'] / 1e6:>9.2f}{r['params'] / 1e6:>9.3f}{r['holdout_top1']:>9.2f}"
                  f"{r['test_top1']:>10.2f}{r['test_top5']:>10.2f}")
        ratios = report["residual_ratios"]["super"]
        for kind, flag in (("mandatory", False), ("skippable", True)):
            values = [r["ratio"] for r in ratios if r["skippable"] is flag]
            print(f"  mean ||F(h)||/||h|| over {kind} blocks: {sum(values) / len(values):.3f}")


if __name__ == "__main__":
    main()
