"""Baseline MSDNet vs Gradient Equilibrium vs full IMTA (GE stage 1, then ISC + KD stage 2), N paired seeds.

Runs of the same seed share the held-out split and the data order in every arm. Optionally tunes each arm's
learning rate with Optuna (TPE, ASHA) on the held-out split first. Prints, and logs to the MLflow parent run,
per exit: mean ± 95% CI per arm and the paired difference against the baseline with its CI, plus the
budgeted accuracy at 3 budgets. Rerun the same command after an interruption: finished runs are kept.

  python sweeps/ge_vs_baseline.py --preset smoke
  ray job submit --runtime-env clusters/runtime_env.yaml -- python sweeps/ge_vs_baseline.py --preset paper-cifar100
"""
from __future__ import annotations

import sys

from adaptnet.cluster.sweep.cli import SMOKE_DATA, Preset, SweepArgumentError, main_guard, parser

ARMS = {
    "baseline": {"technique": "multi_exit", "model.ge_scope": None},
    "ge": {"technique": "multi_exit", "model.ge_scope": "coarsest"},
    "imta": {"technique": "imta_two_stage", "model.ge_scope": "coarsest"},
}
SUBSET = ("data.train_subset", "data.holdout", "data.test_subset")
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
def main() -> int:
    p = parser(__doc__, PRESETS, default="cpu")
    p.add_argument("--seeds", type=int, help="paired seeds per arm (default: the preset's)")
    p.add_argument("--tune-lr", type=int, default=None, metavar="TRIALS",
                   help="first tune each arm's lr with this many Optuna trials (default: the preset's, 0 = off)")
    p.add_argument("--arms", default="baseline,ge,imta", help="comma-separated subset of baseline,ge,imta")
    args = p.parse_args()
    return main_guard(lambda: run(args))


def run(args) -> int:
    from adaptnet.cluster.sweep.spaces import OptimSpace
    from adaptnet.cluster.sweep.summary import csv_text, log_sweep_summary
    from adaptnet.cluster.sweep.config import with_overrides
    from adaptnet.cluster.sweep.driver import parent_run, run_sweep, validate
    from adaptnet.cluster.sweep.spec import SweepSpec
    from adaptnet.cluster.sweep.cli import base_tree, connect, cost_budgets, mlflow_ui_hint, preflight, resolved

    from adaptnet.cluster.tracking.store import client
    from adaptnet.cluster.tracking.views import log_comparison
    from adaptnet.metrics.stats import comparison_rows, row_notes, table_csv_rows, table_markdown, table_text, verdict

    preset = PRESETS[args.preset]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not arms or any(a not in ARMS for a in arms) or "baseline" not in arms:
        raise SweepArgumentError(f"--arms: a comma-separated subset of {', '.join(ARMS)} that includes baseline, "
                                 f"got {args.arms!r}")
    seeds = list(range(args.seeds if args.seeds is not None else preset.seeds))
    if not seeds:
        raise SweepArgumentError("--seeds: must be at least 1")
    tune_lr = preset.trials if args.tune_lr is None else args.tune_lr
    if tune_lr < 0:
        raise SweepArgumentError(f"--tune-lr: must not be negative, got {tune_lr}")
    name = args.name or f"ge_vs_baseline-{args.preset}"
    base = base_tree(args, preset)
    where = resolved(args, preset)
    preflight(args, base, where["tracking_uri"])
    budgets = cost_budgets(base)

    def spec(sweep_name: str, **kwargs) -> SweepSpec:
        return SweepSpec(name=sweep_name, base=base, budgets=tuple(budgets), seed=args.seed, **where, **kwargs)

    lr_searches = {arm: spec(f"{name}-lr-{arm}", space=OptimSpace(weight_decay=None), num_samples=tune_lr, asha=True,
                             grid=None, arms={}) for arm in arms} if tune_lr else {}
    for arm, search in lr_searches.items():  # every config this script can produce, checked before Ray starts
        search.base = with_overrides(base, ARMS[arm])
        validate(search)
    seeded = spec(name, grid={"arm": arms, "seed": seeds}, arms={a: dict(ARMS[a]) for a in arms})
    validate(seeded)

    connect(args)
    parent = spec(name, grid={"arm": arms, "seed": seeds}, arms=seeded.arms)
    parent_id = parent_run(parent, run_key=f"ge_vs_baseline:{name}", preset=args.preset)
    for arm, search in lr_searches.items():
        search.parent_run_id = parent_id
        result = run_sweep(search, preset=args.preset)
        log_sweep_summary(where["tracking_uri"], result)
        best = result.best()
        if best:
            seeded.arms[arm]["optim.lr"] = best.params["optim.lr"]
            print(f"[{name}] {arm}: tuned lr {best.params['optim.lr']:.4g} (held-out score {best.metrics['score']:.2f})")
    seeded.parent_run_id = parent_id
    result = run_sweep(seeded, preset=args.preset)

    exits = sorted({k for t in result.finished() for k in t.metrics if k.startswith("final/test_top1_exit")},
                   key=lambda k: int(k.rsplit("exit", 1)[1]))
    labels = {k: k.rsplit("_", 1)[1] for k in exits}  # final/test_top1_exit3 → exit3
    labels["final/budgeted_area"] = "budgeted mean"
    labels.update({f"final/budget{i + 1}_test_top1": f"@{b / 1e6:.1f}M MACs" for i, b in enumerate(budgets)})
    results = {arm: {t.params["seed"]: {labels[k]: t.metrics.get(k) for k in labels}
                     for t in result.finished() if t.params["arm"] == arm} for arm in arms}
    status = {(t.params["arm"], t.params["seed"]): t.status for t in result.trials}

    def reason(arm: str, seed: int, label: str) -> str:
        if status.get((arm, seed)) != "FINISHED":
            return f"trial {status.get((arm, seed), 'missing')}"
        if label.startswith("@"):
            return f"{label[1:]} is outside this run's budgeted cost curve (no accuracy at that budget)"
        return "no value in the final metrics"

    rows = comparison_rows(results, list(labels.values()), baseline="baseline", seeds=seeds, reason=reason)
    notes = row_notes(rows)
    hint = ("more seeds at this scale measure this scale only; the papers' differences need their scale: "
            "--preset paper-cifar100 on GPUs" if args.preset != "paper-cifar100" else "")
    closing = verdict(rows, "baseline", effect=1.0, scale_hint=hint)
    budget_note = ("budgeted mean: mean accuracy over the budgeted curve; @B: budgeted accuracy at B multiply-adds "
                   "per image (thresholds from the held-out split)")
    text = table_text(rows)
    print(f"\n{name}: test top-1 (%) over {len(seeds)} paired seeds; Δ = arm − baseline, paired; {budget_note}; "
          "detectable |Δ|: the smallest paired difference these seeds call significant at 95%, t(0.975, n−1)·s_d/√n; "
          "n marked * lacks seeds (see the notes below)")
    print(text)
    print("\n".join(notes))
    print(f"\n{closing}")
    failed = [t.name for t in result.trials if t.status != "FINISHED"]
    if failed:
        print(f"not finished: {', '.join(failed)}")
    markdown = f"{budget_note}\n\n{table_markdown(rows)}\n\n" + "".join(f"{n}\n" for n in notes) + f"\n{closing}\n"
    log_sweep_summary(where["tracking_uri"], result, extra_files={
        "comparison.md": markdown, "comparison.csv": csv_text(table_csv_rows(rows))})
    slugs = {label: key.removeprefix("final/").removeprefix("test_top1_").removesuffix("_test_top1")
             for key, label in labels.items()}  # exit3, budgeted_area, budget1 …
    view = log_comparison(where["tracking_uri"], parent_id, rows, markdown, result, arms, slugs,
                          f"{name}: test top-1 over {len(seeds)} paired seeds.\n{closing}", columns=list(labels))
    client(where["tracking_uri"]).set_terminated(parent_id, "FINISHED" if not failed else "FAILED")
    print(f"\nMLflow parent run {parent_id} (experiment {where['experiment']})")
    print(mlflow_ui_hint(where["tracking_uri"], parent_id, view))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
