"""The two-stage IMTA pipeline on real CIFAR-10 (tiny), then `adaptnet evaluate` on its checkpoint."""
import json
import subprocess
import sys

import pytest
import torch

from adaptnet.loop import load_config, run, stage_configs
from adaptnet.loop.trainer import checkpoint_path

TINY = ["data.train_subset=256", "data.holdout=200", "data.test_subset=200", "train.batch_size=32",
        "train.threads=1", "model.name=msdnet_cifar_budgeted", "train.progress=false"]


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory, cifar10_spec):
    out = tmp_path_factory.mktemp("imta")
    cfg = load_config("cifar10-imta", [f"output_dir={out}", f"data.dataset={cifar10_spec}", "train.epochs=1",
                                       "imta.stage2_epochs=1", *TINY])
    results = run(cfg)
    return cfg, results


def test_stage_configs_share_the_split_and_chain_checkpoints(tmp_path):
    cfg = load_config("cifar10-imta", [f"output_dir={tmp_path}", "train.epochs=3", "imta.stage2_epochs=2"])
    stage1, stage2 = stage_configs(cfg)
    assert stage1.technique == "multi_exit" and stage1.model.ge_scope == cfg.model.ge_scope
    assert stage2.technique == "imta_stage2" and stage2.train.epochs == 2
    assert stage2.data.split_from == stage2.imta.stage1_checkpoint
    assert stage2.imta.stage1_checkpoint == str(stage1.run_dir / "checkpoints" / "best.pt")  # held-out selection


def test_stage2_reuses_the_split_and_trains_only_the_new_heads(two_stage):
    cfg, (stage1, stage2) = two_stage
    first = torch.load(checkpoint_path(stage1.run_dir), weights_only=False)
    second = torch.load(checkpoint_path(stage2.run_dir), weights_only=False)
    assert torch.equal(first["split"]["holdout"], second["split"]["holdout"])
    assert torch.equal(first["split"]["train"], second["split"]["train"])
    backbone = {k[len("backbone."):]: v for k, v in second["model"].items() if k.startswith("backbone.")}
    weights = [k for k in backbone if k.endswith(".weight")]
    assert weights and all(torch.equal(backbone[k], first["model"][k]) for k in weights)
    # Official stage 2 keeps the frozen backbone's BN in train mode: running statistics still move.
    stats = [k for k in backbone if k.endswith("running_mean")]
    assert any(not torch.equal(backbone[k], first["model"][k]) for k in stats)
    assert {"train/kd_exit1", "train/ce_exit5", "test/top1_exit5"} <= set(stage2.metrics)


def test_evaluate_command_reports_anytime_and_budgeted(two_stage, tmp_path):
    _, (_, stage2) = two_stage
    out = subprocess.run([sys.executable, "-m", "adaptnet.cli", "evaluate", str(checkpoint_path(stage2.run_dir)),
                          "--json", "--budgets", "10e6,30e6", "--plot-dir", str(tmp_path), "--device", "cpu"],
                         capture_output=True, text=True, check=True).stdout
    report = json.loads(out)
    assert report["technique"] == "imta_stage2" and len(report["exit_macs"]) == 5
    assert report["exit_macs"] == sorted(report["exit_macs"])
    assert len(report["anytime"]["top1"]) == 5
    curve = report["budgeted"]["curve"]
    assert len(curve) == 40 and all(sum(p["exit_counts"]) == 200 for p in curve)
    assert len(report["budgeted"]["accuracy_at_budgets"]) == 2
    assert (tmp_path / "anytime.png").stat().st_size > 1000 and (tmp_path / "budgeted.png").stat().st_size > 1000


def test_joint_variant_trains_backbone_and_isc_against_the_live_last_exit():
    from adaptnet.loop.build import build_training

    cfg = load_config("cifar10-imta", ["technique=imta_joint", "model.name=msdnet_cifar_budgeted", "model.ge_scope=all"])
    model, task = build_training(cfg, 10)
    assert task.teacher == "live" and model.backbone.ge_scope == "all"
    task(model, torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))  # back-propagates its losses
    assert model.backbone.blocks[0][0].layers[0][0].weight.grad.abs().sum() > 0


def test_stage2_without_a_checkpoint_is_rejected():
    from adaptnet.loop import ConfigError

    with pytest.raises(ConfigError, match="^imta.stage1_checkpoint: required"):
        load_config("cifar10-imta", ["technique=imta_stage2"])
