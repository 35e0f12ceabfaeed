"""The recipe pieces wired into the real loop (tiny ADN run on real CIFAR-10): the batch both ADN passes see is
the MixUp/CutMix-mixed one, every step's gradient norm is clipped, the schedule moves once per epoch, and the
EMA weights are the ones evaluated, selected (best.pt), saved, resumed and loaded by `adaptnet evaluate`."""
import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from adaptnet.loop import fit, load_config
from adaptnet.loop.evaluate import load_checkpoint_model
from adaptnet.loop.recipe import BatchMix
from adaptnet.loop.trainer import checkpoint_path, evaluate
from adaptnet.models import SkippableDepthNet

CLIP = 0.05


def _config(tmp_path, spec, name):
    return load_config("cifar10-resnet56-adn", [
        f"name={name}", f"output_dir={tmp_path}", f"data.dataset={spec}", "data.train_subset=96", "data.holdout=64",
        "data.test_subset=64", "train.epochs=3", "train.batch_size=32", "train.progress=false", "train.threads=1",
        "train.mixup_alpha=0.2", "train.cutmix_alpha=1.0", "train.label_smoothing=0.1", f"train.clip_grad_norm={CLIP}",
        "train.ema=true", "train.ema_steps=2", "train.ema_decay=0.99", "optim.lr_step=epoch",
        "optim.warmup_epochs=1", "optim.warmup_factor=0.1"])


class _Crash(RuntimeError):
    pass


class _CrashAfterSecondEpoch:
    def on_epoch_end(self, epoch, metrics, checkpoint):
        if epoch == 1:  # after warm-up: the EMA holds a real average by now
            raise _Crash


def _loss(model, batches):
    return evaluate(model, batches)["loss_super"]


def test_recipe_pieces_in_the_loop(tmp_path, cifar10_spec):
    cfg = _config(tmp_path, cifar10_spec, "straight")
    seen, grad_norms = [], []

    def record_input(module, args):
        if isinstance(module, SkippableDepthNet) and module.training:
            seen.append(args[0].detach().clone())

    def record_grad_norm(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        grad_norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    hooks = [torch.nn.modules.module.register_module_forward_pre_hook(record_input),
             register_optimizer_step_pre_hook(record_grad_norm)]
    try:
        straight = fit(cfg)
    finally:
        for hook in hooks:
            hook.remove()
    history = straight.history

    # Clipping: every step's total gradient norm is at most the bound (unclipped it is far above it).
    assert len(grad_norms) == 3 * 3 and max(grad_norms) <= CLIP * (1 + 1e-4)

    # Per-epoch schedule: one warm-up epoch, then cosine over the 2 remaining epochs (each logged after its epoch,
    # i.e. the next epoch's value); stepping it every iteration as well (3 an epoch) gives other values.
    assert [m["lr"] for m in history] == pytest.approx([0.1, 0.1 * (1 + math.cos(math.pi / 2)) / 2, 0.0], abs=1e-12)

    # MixUp/CutMix: the teacher and the student get the same mixed batch, the one the mixer makes of the
    # loader's batch (epoch 0 replayed from the saved split).
    last = checkpoint_path(straight.run_dir)
    _, data, model = load_checkpoint_model(last, device="cpu")
    data.train.set_epoch(0)
    mix = BatchMix.from_config(cfg, data.num_classes)
    for b, (images, labels) in enumerate(data.train):
        mixed, soft = mix(images, labels, 0)
        assert not torch.equal(mixed, images) and soft.shape == (len(labels), 10)
        assert torch.equal(seen[2 * b], mixed) and torch.equal(seen[2 * b + 1], mixed), b

    # EMA: what was logged is the EMA's evaluation, not the live weights'; best.pt is chosen on it.
    saved = torch.load(last, weights_only=True)
    assert "model_ema" in saved and int(saved["model_ema"]["n_averaged"]) > 0
    assert any(not torch.equal(saved["model"][k], v) for k, v in model.state_dict().items() if v.is_floating_point())
    assert _loss(model, data.test) == history[-1]["test/loss_super"]
    live = load_checkpoint_model(last, device="cpu")[2]
    live.load_state_dict(saved["model"])
    assert _loss(live, data.test) != history[-1]["test/loss_super"]
    best = load_checkpoint_model(straight.run_dir / "checkpoints" / "best.pt", device="cpu")[2]
    best_epoch = max(range(3), key=lambda e: (history[e]["holdout/top1_super"], e))
    assert _loss(best, data.holdout) == history[best_epoch]["holdout/loss_super"]

    # Resume: the EMA (and the mixing stream) continue exactly.
    with pytest.raises(_Crash):
        fit(_config(tmp_path, cifar10_spec, "resumed"), callbacks=[_CrashAfterSecondEpoch()])
    resumed = fit(_config(tmp_path, cifar10_spec, "resumed"))
    assert [m["start_epoch"] for m in resumed.history] == [0, 0, 2]
    again = torch.load(checkpoint_path(resumed.run_dir), weights_only=True)
    for key in ("model", "model_ema"):
        for name, tensor in saved[key].items():
            assert torch.equal(tensor, again[key][name]), (key, name)
