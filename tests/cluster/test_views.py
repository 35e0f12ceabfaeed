"""The MLflow view of a sweep, without a cluster: parent params, the comparison figure, system metrics."""
import math
import time

from adaptnet.cluster.sweep.spec import Objective, SweepResult, SweepSpec, TrialSummary
from adaptnet.cluster.tracking.store import client, find_or_create_run
from adaptnet.cluster.tracking.system import system_metrics
from adaptnet.cluster.tracking.views import arm_cost_figure, comparison_figure, sweep_params
from adaptnet.loop import build_config, read_yaml
from adaptnet.metrics.stats import comparison_rows

ARMS = {"baseline": {"technique": "multi_exit", "model.ge_scope": None},
        "ge": {"technique": "multi_exit", "model.ge_scope": "coarsest"}}


def _base():
    tree = build_config(read_yaml("cifar10-imta"), ["data.dataset=cifar10"]).model_dump()
    tree.pop("output_dir")
    return tree


def test_parent_params_describe_the_sweep_not_one_arm():
    spec = SweepSpec(name="cmp", base=_base(), grid={"arm": list(ARMS), "seed": [0, 1, 2]}, arms=ARMS,
                     budgets=(1e6, 2e6))
    params = sweep_params(spec)
    assert params["sweep.grid.arm"] == "baseline,ge" and params["sweep.grid.seed"] == "0,1,2"
    assert params["sweep.trials"] == "6" and params["sweep.arm.ge"] == "technique=multi_exit, model.ge_scope=coarsest"
    assert "base.optim.lr" in params and "base.data.dataset" in params
    varied = ("base.technique", "base.model.ge_scope", "base.train.seed", "base.data.holdout_seed")
    assert not [k for k in varied if k in params]  # what arms and seeds change is no parent param


def _result():
    trials = []
    for arm, shift in (("baseline", 0.0), ("ge", 2.0)):
        for seed in range(3):
            metrics = {f"final/test_top1_exit{k}": 40 + 5 * k + shift + seed for k in (1, 2, 3)}
            metrics |= {f"final/macs_exit{k}": k * 1e6 for k in (1, 2, 3)}
            trials.append(TrialSummary(f"{arm}{seed}", f"{arm}-s{seed}", {"arm": arm, "seed": seed}, metrics, "FINISHED"))
    return SweepResult("cmp", trials, "parent", (Objective("score"),), "")


def test_comparison_figure_shows_each_arm_with_intervals_and_the_paired_difference():
    result = _result()
    results = {arm: {t.params["seed"]: {f"exit{k}": t.metrics[f"final/test_top1_exit{k}"] for k in (1, 2, 3)}
                     for t in result.trials if t.params["arm"] == arm} for arm in ARMS}
    rows = comparison_rows(results, ["exit1", "exit2", "exit3"], baseline="baseline")
    fig = comparison_figure(rows, "cmp")
    top, bottom = fig.axes
    assert [c.get_label() for c in top.containers] == ["baseline", "ge"]
    (diff,) = bottom.containers
    assert [round(y, 6) for y in diff.lines[0].get_ydata()] == [2.0, 2.0, 2.0]  # ge − baseline, paired
    assert [t.get_text() for t in bottom.get_xticklabels()] == ["exit1", "exit2", "exit3"]
    fig = arm_cost_figure(result, list(ARMS), "cmp")
    (ax,) = fig.axes
    baseline = ax.containers[0]
    assert list(baseline.lines[0].get_xdata()) == [1.0, 2.0, 3.0]
    assert list(baseline.lines[0].get_ydata()) == [46.0, 51.0, 56.0]  # mean over seeds, not one seed
    assert ax.containers[0].has_yerr and not math.isnan(rows[0]["interval"].half_width)
    # an arm has one colour in every figure, whatever order its rows come in
    reordered = comparison_figure([r for r in rows if r["arm"] == "ge"] + [r for r in rows if r["arm"] != "ge"],
                                  "cmp", list(ARMS))
    colour = {c.get_label(): c.lines[0].get_color() for c in ax.containers}
    ge = next(c for c in reordered.axes[0].containers if c.get_label() == "ge")
    assert colour["ge (n=3)"] == ge.lines[0].get_color() != colour["baseline (n=3)"]


def test_system_metrics_are_logged_to_the_training_run(tmp_path):
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = find_or_create_run(tracking, "e", run_key="r", run_name="r", params={})
    with system_metrics(tracking, run_id, interval_s=0.2):
        time.sleep(1.5)
    keys = set(client(tracking).get_run(run_id).data.metrics)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= keys


def test_a_paired_comparison_registers_each_arms_typical_seed_not_a_best_across_arms():
    from adaptnet.cluster.tracking.models import chosen_trials

    scores = {"baseline": [40.0, 41.5, 43.0], "ge": [39.1, 41.5, 40.2]}  # means 41.5 and 40.27
    trials = [TrialSummary(f"{arm}{s}", f"{arm}-s{s}", {"arm": arm, "seed": s}, {"score": v}, "FINISHED")
              for arm, values in scores.items() for s, v in enumerate(values)]
    chosen = chosen_trials(SweepResult("cmp", trials, "parent", (Objective("score"),), ""))
    assert [(alias, t.name) for alias, t, _ in chosen] == [("baseline", "baseline-s1"), ("ge", "ge-s2")]
    assert all("closest to the arm's mean over 3 seeds" in why and "held-out" in why for _, _, why in chosen)
    search = [TrialSummary(f"t{i}", f"t{i}", {"optim.lr": lr}, {"score": v}, "FINISHED")
              for i, (lr, v) in enumerate([(0.1, 40.0), (0.05, 42.0)])]
    ((alias, best, why),) = chosen_trials(SweepResult("lr", search, "parent", (Objective("score"),), ""))
    assert (alias, best.name) == ("best", "t1") and "held-out" in why


def test_cost_figure_plots_the_outputs_each_arm_trains_and_the_papers_points():
    """An individually trained base-depth net's other sub-networks are untrained: the figure leaves them out; the
    paper's numbers of a matching setting are stars at the paper's cost (or ours where it gives none)."""
    from adaptnet.cluster.sweep.paired import paper_points
    from adaptnet.cluster.tracking.views import arm_cost_figure
    from adaptnet.metrics.references import Setting
    from adaptnet.metrics.stats import comparison_rows

    def metrics(super_, base):
        return {"final/macs_FF": 4.11e9, "final/test_top1_FF": super_, "final/macs_TT": 2.58e9,
                "final/test_top1_TT": base, "final/macs_super": 4.11e9, "final/macs_base": 2.58e9}

    trials = [TrialSummary(f"{arm}{s}", f"{arm}-s{s}", {"arm": arm, "seed": s}, metrics(*values), "FINISHED")
              for s in range(2) for arm, values in (("adn", (77.0, 76.0)), ("individual-base", (0.1, 75.0)))]
    result = SweepResult("adn", trials, "parent", (Objective("score"),), "")
    rows = comparison_rows({"adn": {0: {"base": 76.0}, 1: {"base": 76.2}},
                            "individual-base": {0: {"base": 75.0}, 1: {"base": 75.1}}}, ["base"], "individual-base")
    points = paper_points(Setting("imagenet-1k", "resnet50_adn", 150), rows, result)
    assert sorted(points) == [("paper: adn base", 2.58e9, 76.1), ("paper: individual-base base", 2.58e9, 75.0)]
    fig = arm_cost_figure(result, ["adn", "individual-base"], "t", lambda arm, out: arm == "adn" or out == "TT", points)
    lines = fig.axes[0].get_lines()
    plotted = {tuple(line.get_xdata()) for line in lines if line.get_marker() == "o"}
    assert plotted == {(2580.0, 4110.0), (2580.0,)}  # the base-depth arm: its base-net only
    assert sorted(line.get_ydata()[0] for line in lines if line.get_marker() == "*") == [75.0, 76.1]
    assert paper_points(Setting("cifar10", "resnet56_adn", 3, False), rows, result) == []
