"""Every ADN ImageNet preset against the ADN brief's §2.3 table (README commands at wchkang/depth@f24b7b5),
field by field. Batch sizes are global (per GPU × 4)."""
import inspect

import pytest
from torchvision.transforms import v2

from adaptnet.loop import load_config, preset_names

COMMON = {"technique": "adn_distill", "alpha": 0.5, "temperature": 1.0, "top_k": 500, "lr_step": "epoch",
          "momentum": 0.9, "ema_decay": 0.99998, "ema_steps": 32}

# The table of brief §2.3. Schedules: multistep drops in epochs; cosine with its warm-up (epochs, start factor)
# and floor. Augment: the torchvision reference's flags of each README command, read from data.augment.
TABLE = {
    "resnet50-adn-paper": dict(
        model="resnet50_adn", epochs=150, batch=256, optimizer="sgd", lr=0.1, wd=1e-4, norm_bias_wd=0.0,
        embedding_wd=None, schedule="multistep", drops=[60, 100, 140], warmup=(0, None), min_lr=None,
        mixup=0.0, cutmix=0.0, smoothing=0.0, clip=None, amp=False, ema=False,
        augment=dict(auto_augment="none", random_erase=0.0, train_crop_size=224, eval_resize_size=256,
                     eval_crop_size=224, interpolation="bilinear", ra_reps=0)),
    "resnet50-adn-v2": dict(
        model="resnet50_adn", epochs=600, batch=1024, optimizer="sgd", lr=0.5, wd=2e-5, norm_bias_wd=0.0,
        embedding_wd=None, schedule="cosine", drops=None, warmup=(5, 0.01), min_lr=0.0,
        mixup=0.2, cutmix=1.0, smoothing=0.0, clip=None, amp=True, ema=True,  # the README command: no LS
        augment=dict(auto_augment="ta_wide", random_erase=0.1, train_crop_size=176, eval_resize_size=232,
                     eval_crop_size=224, interpolation="bilinear", ra_reps=4)),
    "mbv2-adn-paper": dict(
        model="mobilenet_v2_adn", epochs=300, batch=256, optimizer="sgd", lr=0.1, wd=1e-5, norm_bias_wd=0.0,
        embedding_wd=None, schedule="multistep", drops=[150, 225, 285], warmup=(0, None), min_lr=None,
        mixup=0.0, cutmix=0.0, smoothing=0.0, clip=None, amp=False, ema=False,
        augment=dict(auto_augment="none", random_erase=0.0, train_crop_size=224, eval_resize_size=256,
                     eval_crop_size=224, interpolation="bilinear", ra_reps=0)),
    "swin-t-adn-paper": dict(
        model="swin_t_adn", epochs=300, batch=1024, optimizer="adamw", lr=1e-3, wd=0.05, norm_bias_wd=0.0,
        embedding_wd=0.0, schedule="cosine", drops=None, warmup=(20, 0.01), min_lr=1e-5,
        mixup=0.8, cutmix=1.0, smoothing=0.1, clip=5.0, amp=True, ema=True,
        augment=dict(auto_augment="ta_wide", random_erase=0.25, train_crop_size=224, eval_resize_size=224,
                     eval_crop_size=224, interpolation="bicubic", ra_reps=4)),
    "vit-b16-adn-paper": dict(
        model="vit_b16_adn", epochs=300, batch=1024, optimizer="adamw", lr=7.5e-4, wd=0.2, norm_bias_wd=None,
        embedding_wd=None, schedule="cosine", drops=None, warmup=(30, 0.033), min_lr=0.0,
        mixup=0.2, cutmix=1.0, smoothing=0.11, clip=1.0, amp=True, ema=True,
        augment=dict(auto_augment="ra", ra_magnitude=9, random_erase=0.0, train_crop_size=224, eval_resize_size=256,
                     eval_crop_size=224, interpolation="bilinear", ra_reps=3)),
}


def _augment_flags(cfg) -> dict:
    """data.augment as the reference's command-line flags (--auto-augment ta_wide, --ra-reps 0 = off, ...)."""
    a = cfg.data.augment
    flags = dict(auto_augment={"none": "none", "trivialaugment": "ta_wide", "randaugment": "ra"}[a.auto_augment],
                 random_erase=a.random_erasing, train_crop_size=a.train_crop, eval_resize_size=a.eval_resize,
                 eval_crop_size=a.eval_crop, interpolation=a.interpolation,
                 ra_reps=a.repeated_augment if a.repeated_augment > 1 else 0)
    if a.auto_augment == "randaugment":  # transforms.v2's RandAugment magnitude, as the reference's default
        flags["ra_magnitude"] = inspect.signature(v2.RandAugment).parameters["magnitude"].default
    return flags


@pytest.mark.parametrize("preset", sorted(TABLE))
def test_adn_preset_equals_the_brief_table(preset):
    row = {**COMMON, **TABLE[preset]}
    assert preset in preset_names()
    cfg = load_config(preset)
    assert _augment_flags(cfg) == row["augment"] and cfg.data.transform == "imagenet"
    o, t, a = cfg.optim, cfg.train, cfg.adn
    actual = {
        "technique": cfg.technique, "model": cfg.model.name, "epochs": t.epochs, "batch": t.batch_size,
        "optimizer": o.name, "lr": o.lr, "wd": o.weight_decay, "norm_bias_wd": o.norm_bias_weight_decay,
        "embedding_wd": o.embedding_weight_decay, "schedule": o.schedule, "lr_step": o.lr_step,
        "drops": [round(m * t.epochs) for m in o.milestones] if o.schedule == "multistep" else None,
        "warmup": (o.warmup_epochs, o.warmup_factor if o.warmup_epochs else None),
        "min_lr": o.min_lr if o.schedule == "cosine" else None,
        "mixup": t.mixup_alpha, "cutmix": t.cutmix_alpha, "smoothing": t.label_smoothing, "clip": t.clip_grad_norm,
        "amp": t.amp, "ema": t.ema, "alpha": a.alpha, "temperature": a.temperature, "top_k": a.top_k,
    }
    if o.name == "sgd":
        actual["momentum"] = o.momentum
        assert o.nesterov is False
    if o.schedule == "multistep":
        assert o.gamma == 0.1
    if t.ema:
        actual.update(ema_decay=t.ema_decay, ema_steps=t.ema_steps)
    expected = {k: row[k] for k in actual}
    assert actual == expected
    assert cfg.data.normalization == "imagenet" and cfg.data.holdout == 50_000
