"""`adaptnet train --dry-run` on real data, and the MSDNet/IMTA paper presets against the IMTA brief's recipe table."""
import re

import pytest

from adaptnet.cli import main
from adaptnet.loop import load_config, preset_names, stage_configs

IMAGENET_PRESETS = [p for p in preset_names() if not p.startswith("cifar")]  # every ImageNet paper recipe


@pytest.mark.parametrize("preset", IMAGENET_PRESETS)
def test_dry_run_of_imagenet_presets_on_the_imagenet_sample_plans_and_writes_nothing(preset, imagenet_tree, tmp_path,
                                                                                   capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["train", preset, f"data.dataset={imagenet_tree}", "data.holdout=100", "--dry-run", "--workers", "4"])
    out = capsys.readouterr().out
    assert code == 0
    assert "1000 classes" in out and "train: 1000 images" in out and "training on 900" in out
    cfg = load_config(preset)
    a = cfg.data.augment
    assert f"RandomResizedCrop({a.train_crop}, {a.interpolation})" in out and f"Resize({a.eval_resize})" in out
    assert "CenterCrop(224)" in out and "costs at 224×224" in out
    for stage in stage_configs(cfg):
        per_worker = stage.train.batch_size // 4
        assert f"batch: global {stage.train.batch_size} = 4 workers × {per_worker}" in out
        steps = -(-(-(-900 // 4)) // per_worker)
        assert f"steps: {steps} per epoch, {steps * stage.train.epochs} in total" in out
        assert f"test split every {stage.train.test_every} epochs and at the last" in out  # 50k images: not every epoch
    assert f"AMP: {'on (' + cfg.train.amp_dtype if cfg.train.amp else 'off'}" in out
    on = {True: "on", False: "off"}  # the GPU switches each preset states
    assert (f"GPU: cudnn.benchmark {on[cfg.train.cudnn_benchmark]}, TF32 {on[cfg.train.tf32]}, channels_last "
            f"{on[cfg.train.channels_last]}") in out
    if "imta" in preset or preset == "imagenet-paper":  # the official MSDNet/IMTA runs: full fp32, no TF32
        assert not cfg.train.amp and not cfg.train.tf32
    for stage in stage_configs(cfg):  # per GPU: the memory estimate and what a 24 GB GPU needs (the default)
        assert re.search(rf"\[{stage.name}\] memory per GPU \(estimate at {a.train_crop}×{a.train_crop}\): \d+ MB of "
                         rf"activations per image .*micro-batch {stage.train.batch_size // 4} → [\d.]+ GB", out), out
    assert re.search(r"on a 24 GB GPU: (fits|needs train\.accumulate_steps=\d+)", out)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_dry_run_chooses_the_accumulation_a_gpu_needs(imagenet_tree, tmp_path, capsys, monkeypatch):
    """ViT-b/16 at 256 images per GPU (1024 on 4): too large for a 24 GB A10G, so --dry-run names the fewest
    micro-batches that fit; an 80 GB GPU takes the whole share; the estimate grows with the micro-batch. Each rank
    decodes with its CPUs less one."""
    monkeypatch.chdir(tmp_path)
    found = {}
    for memory in (24, 80):
        assert main(["train", "vit-b16-adn-paper", f"data.dataset={imagenet_tree}", "data.holdout=100",
                     "data.loader=torch", "--dry-run", "--workers", "4", "--cpus-per-worker", "8", "--gpu-memory-gb", str(memory)]) == 0
        found[memory] = capsys.readouterr().out
    needed = re.search(r"on a 24 GB GPU: needs train\.accumulate_steps=(\d+) \(micro-batch (\d+) → ([\d.]+) GB\)",
                       found[24])
    assert needed and int(needed.group(1)) > 1 and int(needed.group(1)) * int(needed.group(2)) == 256
    assert float(needed.group(3)) <= 0.9 * 24
    assert "loader: torch (7 decode processes per rank" in found[24]
    whole = float(re.search(r"micro-batch 256 → ([\d.]+) GB", found[80]).group(1))
    assert 0.9 * 24 < whole <= 0.9 * 80 and "on a 80 GB GPU: fits" in found[80]


def test_dry_run_of_the_cifar_preset_on_the_cifar_mirror(cifar10_spec, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "cifar100-paper", f"data.dataset={cifar10_spec}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "train: 50000 images" in out and "loader: memory" in out and "RandomCrop(32, padding 4)" in out
    assert "steps: 704 per epoch, 211200 in total" in out  # 45,000 / 64, 300 epochs
    assert "×0.1 at epochs 150, 225" in out and "AMP: off (fp32)" in out and "TF32 off" in out
    assert list(tmp_path.iterdir()) == []


def test_global_batch_that_does_not_divide_over_the_workers_is_one_line_before_ray(cifar10_spec, capsys):
    code = main(["train", "cifar10-smoke", f"data.dataset={cifar10_spec}", "train.batch_size=64", "--workers", "3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err == "adaptnet: error: train.batch_size: the global batch 64 does not divide over 3 workers"
    import ray

    assert not ray.is_initialized()


# IMTA brief §5 (kalviny/MSDNet-PyTorch main.py, IMTA main_GE.py / main_IMTA.py / run_*.sh), field by field.
RECIPES = {
    "cifar100-paper": dict(epochs=300, batch=64, lr=0.1, wd=1e-4, momentum=0.9, nesterov=False,
                           drops=[150, 225], amp=False, transform="cifar"),
    "cifar100-imta-paper": dict(epochs=300, batch=64, lr=0.1, wd=1e-4, momentum=0.9, nesterov=False,
                                drops=[150, 225], amp=False, transform="cifar"),
    "imagenet-paper": dict(epochs=90, batch=256, lr=0.1, wd=1e-4, momentum=0.9, nesterov=False, drops=[30, 60],
                           amp=False, transform="imagenet"),
    "imagenet-imta-paper": dict(epochs=90, batch=256, lr=0.1, wd=1e-4, momentum=0.9, nesterov=False,
                                drops=[30, 60], amp=False, transform="imagenet", T=1.0, gamma=0.1),
}


@pytest.mark.parametrize("preset", sorted(RECIPES))
def test_msdnet_imta_presets_equal_the_recipe_table(preset):
    want = RECIPES[preset]
    for stage in stage_configs(load_config(preset)):
        t, o = stage.train, stage.optim
        assert (t.epochs, t.batch_size, t.accumulate_steps, t.amp) == (want["epochs"], want["batch"], 1, want["amp"])
        assert (o.name, o.lr, o.weight_decay, o.momentum, o.nesterov) == ("sgd", want["lr"], want["wd"],
                                                                          want["momentum"], want["nesterov"])
        assert o.norm_bias_weight_decay is None and o.warmup_epochs == 0  # wd on every parameter, no warm-up
        assert o.schedule == "multistep" and o.gamma == 0.1
        assert [round(m * t.epochs) for m in o.milestones] == want["drops"]
        if want["transform"] == "imagenet":
            a = stage.data.augment
            assert stage.data.transform == "imagenet" and stage.data.normalization == "imagenet"
            assert (a.train_crop, a.eval_resize, a.eval_crop, a.interpolation) == (224, 256, 224, "bilinear")
            assert stage.data.holdout == 50_000
        else:
            assert stage.data.holdout == 5000 and stage.data.dataset == "cifar100"
        if "T" in want and stage.technique == "imta_stage2":
            assert (stage.imta.temperature, stage.imta.gamma, stage.imta.kd_reduction) == (want["T"], want["gamma"], "official")
