"""The paired comparison every comparison script runs: arms × paired seeds (the same held-out split and data
order per seed in every arm), stage sharing, restore, progress lines, the table with detectable differences and
the papers' numbers where the setting matches, and comparison.md/.csv/.png on the MLflow parent run. A script
declares a `Comparison` (its arms, presets and compared metrics), the way a search script declares its space."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .cli import Preset, SweepArgumentError, main_guard, parser


@dataclass(frozen=True)
class Comparison:
    script: str                                   # names the sweep (`<script>-<preset>`) and its MLflow run key
    doc: str
    arms: dict[str, dict]                         # arm → run-config overrides
    default_arms: str
    required_arm: str                             # every comparison includes it
    presets: dict[str, Preset]
    default_preset: str
    # (finished trials' final metrics, cost budgets) → {final metric key: table label}, in table order
    labels: Callable[[list[dict], list[float]], dict[str, str]]
    baseline_of: Callable[[str], str]             # per label, the arm the others are compared with
    arms_of: Callable[[str, list[str]], list[str]] = lambda label, arms: arms  # per label, the arms in its rows
    baseline_name: str = "baseline"               # how the verdict names the baseline
    notes: str = ""                               # what the table's labels mean
    scale_hint: Callable[[str], str] = lambda preset: ""
    arm_help: str = ""
    plots: Callable[[str, str], bool] = lambda arm, output: True  # the outputs an arm trains (in the cost figure)
    tune_lr: bool = True


def paired_main(comparison: Comparison) -> int:
    p = parser(comparison.doc, comparison.presets, default=comparison.default_preset)
    p.add_argument("--seeds", type=int, help="paired seeds per arm (default: the preset's)")
    if comparison.tune_lr:
        p.add_argument("--tune-lr", type=int, default=None, metavar="TRIALS",
                       help="first tune each arm's lr with this many Optuna trials (default: the preset's, 0 = off)")
    p.add_argument("--arms", default=comparison.default_arms, help=comparison.arm_help or
                   f"comma-separated subset of {','.join(comparison.arms)}")
    args = p.parse_args()
    return main_guard(lambda: run_comparison(comparison, args))


def _arms(comparison: Comparison, text: str) -> list[str]:
    arms = [a.strip() for a in text.split(",") if a.strip()]
    if not arms or any(a not in comparison.arms for a in arms) or comparison.required_arm not in arms:
        raise SweepArgumentError(f"--arms: a comma-separated subset of {', '.join(comparison.arms)} that includes "
                                 f"{comparison.required_arm}, got {text!r}")
    return arms


def comparison_table(comparison: Comparison, result, arms: list[str], seeds: list[int], labels: dict[str, str]):
    """The rows of the printed table: per label, its arms against that label's baseline, over the paired seeds."""
    from ...metrics.stats import comparison_rows

    results = {arm: {t.params["seed"]: {labels[k]: t.metrics.get(k) for k in labels}
                     for t in result.finished() if t.params["arm"] == arm} for arm in arms}
    status = {(t.params["arm"], t.params["seed"]): t.status for t in result.trials}

    def reason(arm: str, seed: int, label: str) -> str:
        if status.get((arm, seed)) != "FINISHED":
            return f"trial {status.get((arm, seed), 'missing')}"
        if label.startswith("@"):
            return f"{label[1:]} is outside this run's budgeted cost curve (no accuracy at that budget)"
        return "no value in the final metrics"

    rows = []
    for label in labels.values():
        shown = [a for a in comparison.arms_of(label, arms) if a in arms]
        baseline = comparison.baseline_of(label)
        if baseline not in shown:  # its baseline arm was not run: the arms' values without a difference
            baseline = shown[0]
        rows += comparison_rows({a: results[a] for a in shown}, [label], baseline=baseline, seeds=seeds, reason=reason)
    return rows


def comparison_markdown(legend: str, rows: list[dict], notes: list[str], paper: list[str], closing: str) -> str:
    """comparison.md: what the labels mean, the table, why rows lack seeds, the papers' numbers (or why there are
    none) and the verdict."""
    from ...metrics.stats import table_markdown

    return (f"{legend}\n\n{table_markdown(rows)}\n\n" + "".join(f"{n}\n" for n in notes)
            + "".join(f"\n{line}\n" for line in paper) + f"\n{closing}\n")


def paper_points(setting, rows: list[dict], result) -> list[tuple[str, float, float]]:
    """(label, multiply-adds, top-1) of the published numbers this comparison matches, at the paper's cost or,
    where the paper gives none, at our output's (the cost figure's stars)."""
    from ...metrics.references import references_for

    points, shown = [], {(r["arm"], r["metric"]) for r in rows}
    for (arm, output), ref in references_for(setting, sorted({r["arm"] for r in rows})).items():
        if (arm, output) not in shown:
            continue
        ours = [t.metrics.get(f"final/macs_{output}") for t in result.finished() if t.params.get("arm") == arm]
        macs = ref.macs or next((m for m in ours if m), None)
        if macs:
            points.append((f"{ref.label}: {arm} {output}", macs, ref.top1))
    return points


def run_comparison(comparison: Comparison, args) -> int:
    from ...metrics.references import paper_lines
    from ...metrics.stats import row_notes, table_csv_rows, table_text, verdict
    from ..tracking.store import client
    from ..tracking.views import log_comparison
    from .cli import base_tree, comparison_setting, connect, cost_budgets, mlflow_ui_hint, preflight, resolved
    from .config import with_overrides
    from .driver import parent_run, run_sweep, validate
    from .spaces import OptimSpace
    from .spec import SweepSpec
    from .summary import csv_text, log_sweep_summary

    preset = comparison.presets[args.preset]
    arms = _arms(comparison, args.arms)
    seeds = list(range(args.seeds if args.seeds is not None else preset.seeds))
    if not seeds:
        raise SweepArgumentError("--seeds: must be at least 1")
    tune_lr = (preset.trials if args.tune_lr is None else args.tune_lr) if comparison.tune_lr else 0
    if tune_lr < 0:
        raise SweepArgumentError(f"--tune-lr: must not be negative, got {tune_lr}")
    name = args.name or f"{comparison.script}-{args.preset}"
    base = base_tree(args, preset)
    where = resolved(args, preset)
    if not args.dry_run:
        preflight(args, base, where["tracking_uri"])
    budgets = cost_budgets(base)

    def spec(sweep_name: str, **kwargs) -> SweepSpec:
        return SweepSpec(name=sweep_name, base=base, budgets=tuple(budgets), seed=args.seed, **where, **kwargs)

    lr_searches = {arm: spec(f"{name}-lr-{arm}", space=OptimSpace(weight_decay=None), num_samples=tune_lr, asha=True,
                             grid=None, arms={}) for arm in arms} if tune_lr else {}
    for arm, search in lr_searches.items():  # every config this script can produce, checked before Ray starts
        search.base = with_overrides(base, comparison.arms[arm])
        validate(search)
    seeded = spec(name, grid={"arm": arms, "seed": seeds}, arms={a: dict(comparison.arms[a]) for a in arms})
    validate(seeded)
    if args.dry_run:
        from .plan import sweep_plan_lines

        for planned in [*lr_searches.values(), seeded]:
            print("\n".join(sweep_plan_lines(planned, args.preset)))
        return 0
    setting = comparison_setting(base)  # what published numbers must share to be compared with ours

    connect(args)
    parent = spec(name, grid={"arm": arms, "seed": seeds}, arms=seeded.arms)
    parent_id = parent_run(parent, run_key=f"{comparison.script}:{name}", preset=args.preset)
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

    labels = comparison.labels([t.metrics for t in result.finished()], budgets)
    rows = comparison_table(comparison, result, arms, seeds, labels)
    notes = row_notes(rows)
    closing = verdict(rows, comparison.baseline_name, effect=1.0, scale_hint=comparison.scale_hint(args.preset))
    text = table_text(rows)
    print(f"\n{name}: test top-1 (%) over {len(seeds)} paired seeds; Δ = arm − {comparison.baseline_name}, paired; "
          f"{comparison.notes}; detectable |Δ|: the smallest paired difference these seeds call significant at 95%, "
          "t(0.975, n−1)·s_d/√n; n marked * lacks seeds (see the notes below)")
    print(text)
    print("\n".join(notes))
    paper = paper_lines(setting, rows)
    print("\n".join(paper))
    print(f"\n{closing}")
    failed = [t.name for t in result.trials if t.status != "FINISHED"]
    if failed:
        print(f"not finished: {', '.join(failed)}")
    markdown = comparison_markdown(comparison.notes, rows, notes, paper, closing)
    log_sweep_summary(where["tracking_uri"], result, extra_files={
        "comparison.md": markdown, "comparison.csv": csv_text(table_csv_rows(rows))})
    slugs = {label: key.removeprefix("final/").removeprefix("test_top1_").removesuffix("_test_top1")
             for key, label in labels.items()}  # exit3, budgeted_area, budget1 …
    view = log_comparison(where["tracking_uri"], parent_id, rows, markdown, result, arms, slugs,
                          f"{name}: test top-1 over {len(seeds)} paired seeds.\n{closing}", columns=list(labels),
                          keep=comparison.plots, references=paper_points(setting, rows, result))
    client(where["tracking_uri"]).set_terminated(parent_id, "FINISHED" if not failed else "FAILED")
    print(f"\nMLflow parent run {parent_id} (experiment {where['experiment']})")
    print(mlflow_ui_hint(where["tracking_uri"], parent_id, view))
    return 1 if failed else 0
