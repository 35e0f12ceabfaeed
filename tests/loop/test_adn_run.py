"""ADN end to end on real CIFAR-10 (tiny): self-distillation training, then the 2^S sub-network report."""
import json
import subprocess
import sys

import pytest

from adaptnet.loop import ConfigError, fit, load_config
from adaptnet.loop.trainer import checkpoint_path


def test_adn_run_and_subnetwork_report(tmp_path, cifar10_spec):
    cfg = load_config("cifar10-resnet56-adn", [
        f"output_dir={tmp_path}", f"data.dataset={cifar10_spec}", "data.train_subset=256", "data.holdout=128",
        "data.test_subset=128", "train.epochs=1", "train.batch_size=32", "train.progress=false"])
    result = fit(cfg)
    assert {"train/ce_super", "train/kd_base", "train/top1_base", "holdout/top1_super", "test/top1_base"} <= set(result.metrics)
    costs = json.loads((result.run_dir / "costs.json").read_text())
    assert [c["skip"] for c in costs["configs"]][:2] == ["FFF", "FFT"] and len(costs["configs"]) == 8

    out = subprocess.run([sys.executable, "-m", "adaptnet.cli", "evaluate", str(checkpoint_path(result.run_dir)),
                          "--json", "--budgets", "80e6,200e6", "--plot-dir", str(tmp_path), "--device", "cpu"],
                         capture_output=True, text=True, check=True).stdout
    report = json.loads(out)
    rows = {r["skip"]: r for r in report["subnets"]}
    assert len(rows) == 8 and rows["FFF"]["macs"] > rows["TTT"]["macs"]
    assert all(0 <= r["test_top1"] <= 100 and r["test_top1"] <= r["test_top5"] for r in rows.values())
    front = report["pareto_front"]
    assert front and all(rows[a]["macs"] < rows[b]["macs"] for a, b in zip(front, front[1:]))
    cheap, rich = report["budgets"]
    assert cheap["choice"]["macs"] <= 80e6 and rich["choice"]["skip"] in front
    ratios = report["residual_ratios"]["super"]
    assert len(ratios) == 27 and {r["skippable"] for r in ratios} == {True, False}
    assert len(report["residual_ratios"]["base"]) == 15
    assert (tmp_path / "subnets.png").stat().st_size > 1000


@pytest.mark.parametrize("preset,model", [("cifar10-resnet56-adn", "resnet56_adn"),
                                          ("cifar10-smoke", "msdnet_cifar_budgeted")])
def test_a_trials_bundle_takes_what_its_final_evaluation_measured(tmp_path, cifar10_spec, monkeypatch, preset, model):
    """A sweep's trial evaluates its checkpoint once: the LoggedModel's bundle reuses that report (an ADN net's
    2^S sub-network table, a multi-exit net's calibration at the same budgets) and gives the card and thresholds
    of a fresh evaluation; a report of another checkpoint (or other budgets) is evaluated again."""
    import importlib

    from adaptnet.deploy import bundle as bundles

    evaluate = importlib.import_module("adaptnet.loop.evaluate")  # the module (adaptnet.loop.evaluate is also a function)
    cfg = load_config(preset, [
        f"output_dir={tmp_path}", f"data.dataset={cifar10_spec}", f"model.name={model}", "data.train_subset=128",
        "data.holdout=64", "data.test_subset=64", "train.epochs=1", "train.batch_size=32", "train.progress=false"])
    checkpoint = checkpoint_path(fit(cfg).run_dir)
    adn = model.endswith("adn")
    how = {"skip": "TTT"} if adn else {"budgets": []}
    fresh = bundles.build_bundle(checkpoint, **how)
    report = evaluate.evaluate_checkpoint(checkpoint, [] if adn else [fresh["exit_macs"][-1]], device="cpu")
    calls = []
    for module, name in ((evaluate, "subnet_report"), (bundles, "collect_probs")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, real=real, **k: calls.append(1) or real(*a, **k))
    reused = bundles.build_bundle(checkpoint, **how, evaluated=report)
    assert calls == [] and reused["card"] == fresh["card"]
    assert adn or (reused["points"], reused["budgets"]) == (fresh["points"], fresh["budgets"])
    bundles.build_bundle(checkpoint, **how, evaluated={**report, "checkpoint": "another.pt"})
    assert calls
    if not adn:  # the report's budgets are not the bundle's
        calls.clear()
        bundles.build_bundle(checkpoint, budgets=[fresh["exit_macs"][-2]], evaluated=report)
        assert calls


def test_adn_technique_needs_an_adaptive_depth_model():
    with pytest.raises(ConfigError, match="^technique: adn_distill needs a SkippableDepthNet"):
        load_config("cifar10-resnet56-adn", ["model.name=msdnet_cifar_anytime"])
    with pytest.raises(ConfigError, match="^model.ge_scope"):
        load_config("cifar10-resnet56-adn", ["model.ge_scope=all"])


@pytest.mark.parametrize("preset,stages", [("cifar10-mbv2-adn", 5), ("cifar10-swin-adn", 3)])
def test_new_adn_families_train_and_evaluate_through_the_cli(tmp_path, cifar10_spec, capsys, preset, stages):
    from adaptnet.cli import main

    assert main(["train", preset, f"output_dir={tmp_path}", f"data.dataset={cifar10_spec}", "data.train_subset=64",
                 "data.holdout=32", "data.test_subset=32", "train.epochs=1", "train.batch_size=32",
                 "train.eval_batch_size=32", "train.progress=false"]) == 0
    run_dir = next(p.parent.parent for p in tmp_path.rglob("best.pt"))
    capsys.readouterr()
    assert main(["evaluate", str(checkpoint_path(run_dir)), "--device", "cpu", "--budgets", "1e12"]) == 0
    text = capsys.readouterr().out
    rows = [line.split() for line in text.splitlines() if line.split() and set(line.split()[0]) <= {"T", "F"}
            and len(line.split()[0]) == stages]
    assert len(rows) == 2 ** stages and rows[0][0] == "F" * stages and rows[-1][0] == "T" * stages
    assert float(rows[0][1]) > float(rows[-1][1])  # the base-net is cheaper
    front = text.split("Pareto front", 1)[1].splitlines()[0].split(":", 1)[1].split()
    assert front and set(front) <= {r[0] for r in rows}
    assert "at 1000000.00 MMACs: " in text
