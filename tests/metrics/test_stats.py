"""Confidence intervals of the seeded comparison, checked against hand computations."""
import math

import pytest

from adaptnet.metrics.stats import comparison_rows, mean_ci, paired_difference, table_markdown, table_text


def test_mean_ci_matches_a_hand_computation():
    # values 1,2,3,4: mean 2.5, sample sd sqrt(5/3) = 1.290994, se = 0.645497, t(0.975, 3) = 3.182446
    interval = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert interval.mean == pytest.approx(2.5)
    assert interval.half_width == pytest.approx(3.182446 * 1.290994 / 2, rel=1e-6)  # 2.054260
    assert (interval.low, interval.high) == pytest.approx((2.5 - 2.05426, 2.5 + 2.05426), abs=1e-5)


def test_ninety_percent_interval_and_single_value():
    # t(0.95, 2) = 2.919986; values 10, 12, 17: mean 13, sd sqrt(13) = 3.605551
    assert mean_ci([10.0, 12.0, 17.0], level=0.9).half_width == pytest.approx(2.919986 * 3.605551 / math.sqrt(3), rel=1e-6)
    single = mean_ci([7.0])
    assert single.mean == 7.0 and math.isnan(single.half_width) and str(single) == "7.00"


def test_paired_difference_uses_per_seed_differences_not_the_two_means():
    baseline = {0: 50.0, 1: 60.0, 2: 70.0}
    arm = {0: 51.0, 1: 62.0, 2: 70.0, 3: 99.0}      # seed 3 has no baseline partner and is ignored
    # differences 1, 2, 0: mean 1, sd 1, t(0.975, 2) = 4.302653 → half width 4.302653 / sqrt(3) = 2.484138
    diff = paired_difference(arm, baseline)
    assert diff.n == 3 and diff.mean == pytest.approx(1.0)
    assert diff.half_width == pytest.approx(2.484138, rel=1e-6)
    # an unpaired interval would be far wider: the seeds' spread (±10) cancels in the pairing
    assert mean_ci([51.0, 62.0, 70.0]).half_width > 9 * diff.half_width


def test_comparison_rows_and_tables():
    results = {"baseline": {0: {"exit1": 50.0}, 1: {"exit1": 60.0}, 2: {"exit1": 70.0}},
               "ge": {0: {"exit1": 51.0}, 1: {"exit1": 62.0}, 2: {"exit1": 70.0}}}
    rows = comparison_rows(results, ["exit1"], baseline="baseline")
    assert [(r["arm"], r["diff"] is None) for r in rows] == [("baseline", True), ("ge", False)]
    assert rows[1]["diff"].mean == pytest.approx(1.0)
    text, markdown = table_text(rows), table_markdown(rows)
    assert "61.00 ± 23.70" in text and "+1.00" in text and "[-1.48, +3.48]" in text
    assert markdown.splitlines()[0].startswith("| metric | arm |") and markdown.count("\n") == 3


def test_seeds_needed_and_the_verdict_match_hand_computations():
    from adaptnet.metrics.stats import seeds_needed, verdict

    # sd 1, effect 1: t(0.975, 5)/√6 = 2.570582/2.449490 = 1.0494 > 1; t(0.975, 6)/√7 = 2.446912/2.645751 = 0.9248
    assert seeds_needed(1.0, 1.0) == 7
    assert seeds_needed(float("nan"), 1.0) is None and seeds_needed(0.0, 1.0) == 2
    results = {"baseline": {0: {"exit1": 50.0}, 1: {"exit1": 60.0}, 2: {"exit1": 70.0}},
               "ge": {0: {"exit1": 51.0}, 1: {"exit1": 62.0}, 2: {"exit1": 70.0}}}       # Δ 1, 2, 0: sd 1
    rows = comparison_rows(results, ["exit1"], baseline="baseline")
    assert "detectable |Δ|" in table_text(rows) and " 2.48" in table_text(rows)     # 4.302653·1/√3
    said = verdict(rows, "baseline", effect=1.0, scale_hint="or --preset paper-cifar100 on GPUs")
    assert said.splitlines() == [
        "No arm differs from baseline at 95% on any metric with 3 paired seeds.",
        "These seeds could detect only paired differences of 2.48 to 2.48 points (t(0.975, n−1)·s_d/√n).",
        "Detecting 1 point at this spread would take 7 to 7 paired seeds; or --preset paper-cifar100 on GPUs."]
    results["ge"] = {0: {"exit1": 51.0}, 1: {"exit1": 61.1}, 2: {"exit1": 70.9}}     # Δ 1, 1.1, 0.9: sd 0.1
    said = verdict(comparison_rows(results, ["exit1"], baseline="baseline"), "baseline")
    # half width 4.302653·0.1/√3 = 0.248414: [0.75, 1.25] excludes 0
    assert said.startswith("Differs from the baseline at 95%: ge on exit1 (Δ +1.00 [+0.75, +1.25])")


def test_a_row_never_loses_a_seed_silently():
    from adaptnet.metrics.stats import row_notes, table_csv_rows

    results = {"baseline": {0: {"@20M": 40.0}, 1: {"@20M": 42.0}, 2: {"@20M": 44.0}},
               "ge": {0: {"@20M": 41.0}, 1: {}, 2: {"@20M": 45.0}},
               "imta": {0: {}, 1: {}, 2: {}}}
    why = lambda arm, seed, metric: f"budget {metric} outside seed {seed}'s cost curve"  # noqa: E731
    rows = comparison_rows(results, ["@20M"], baseline="baseline", reason=why)
    ge, imta = rows[1], rows[2]
    assert ge["interval"].n == 2 and ge["missing"] == {1: "budget @20M outside seed 1's cost curve"}
    assert ge["diff"].n == 2 and ge["diff"].mean == 1.0 and ge["diff"].half_width == 0  # Δ 1, 1
    assert imta["interval"] is None and sorted(imta["missing"]) == [0, 1, 2]  # kept, shown as "-"
    text = table_text(rows)
    assert "2/3*" in text and "0/3*" in text
    assert row_notes(rows)[0] == "* @20M, ge: 2 of 3 seeds: seed 1: budget @20M outside seed 1's cost curve"
    assert table_csv_rows(rows)[1]["missing"] == "seed 1: budget @20M outside seed 1's cost curve"


def test_every_markdown_table_written_has_one_cell_count_per_line():
    """comparison.md (its header holds "|Δ|"), a trials table with a pipe in a value, and a model card."""
    from conftest import assert_markdown_tables

    from adaptnet.cluster.sweep.summary import markdown
    from adaptnet.cluster.tracking.export import card_markdown

    results = {"baseline": {0: {"exit1": 50.0}, 1: {"exit1": 60.0}}, "ge": {0: {"exit1": 51.0}, 1: {"exit1": 62.0}}}
    assert "detectable \\|Δ\\|" in table_markdown(comparison_rows(results, ["exit1"], baseline="baseline"))
    assert assert_markdown_tables(table_markdown(comparison_rows(results, ["exit1"], baseline="baseline"))) == 1
    assert assert_markdown_tables(markdown([{"trial": "a", "param:x": "1|2", "score": 3.0}])) == 1
    card = {"run": "r", "model": "m", "technique": "t", "dataset": "d", "input_size": 32, "classes": ["a"],
            "kind": "subnet", "skip": "TT", "macs": 1e6, "params": 1e5,
            "subnets": [{"skip": s, "macs": 1e6, "params": 1e5, "holdout_top1": 1.0, "test_top1": 2.0} for s in ("TT", "FF")]}
    assert assert_markdown_tables(card_markdown(card)) == 1


def test_the_comparison_as_metrics_equals_the_table():
    from adaptnet.cluster.tracking.views import comparison_metrics

    results = {"baseline": {0: {"@1.5M MACs": 50.0}, 1: {"@1.5M MACs": 60.0}},
               "ge": {0: {"@1.5M MACs": 51.0}, 1: {"@1.5M MACs": 63.0}}}
    rows = comparison_rows(results, ["@1.5M MACs"], baseline="baseline")
    metrics = comparison_metrics(rows, {"@1.5M MACs": "budget1"})
    base, ge = rows
    assert metrics["cmp/budget1/baseline/mean"] == pytest.approx(55.0) and metrics["cmp/budget1/ge/n"] == 2
    assert metrics["cmp/budget1/ge/ci_low"] == pytest.approx(ge["interval"].low)
    assert metrics["cmp/budget1/ge/delta"] == pytest.approx(2.0)
    assert (metrics["cmp/budget1/ge/delta_ci_low"], metrics["cmp/budget1/ge/delta_ci_high"]) == pytest.approx(
        (ge["diff"].low, ge["diff"].high))
    assert not any(k.startswith("cmp/budget1/baseline/delta") for k in metrics)
