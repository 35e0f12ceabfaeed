"""Batch-level recipe pieces on their own: MixUp/CutMix soft targets, soft targets and label smoothing in every
task, gradient clipping (with AMP unscaling) and the torchvision-reference EMA update rule."""
import pytest
import torch
import torch.nn.functional as F

import adaptnet
from adaptnet.loop.ema import ModelEMA, effective_decay, eval_weights
from adaptnet.loop.recipe import BatchMix, clip_gradients, hard_labels
from adaptnet.techniques import IMTANet, MultiExitCE, OneForAllKD, SuperBaseDistillation, top_k_kd_loss


def _batch(n=8, classes=10, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randperm(classes, generator=g)[:n] % classes


def _soft_ce(logits, targets, smoothing=0.0):
    q = targets * (1 - smoothing) + smoothing / logits.shape[1]
    return -(q * F.log_softmax(logits, 1)).sum(1).mean()


def test_mixup_targets_are_soft_pairs_summing_to_one_and_match_the_mixed_images():
    images, labels = _batch()
    mixed, soft = BatchMix(10, mixup_alpha=0.4, seed=3)(images, labels, epoch=0)
    assert soft.shape == (8, 10) and torch.allclose(soft.sum(1), torch.ones(8))
    lam = float(soft[0, labels[0]])
    assert 0 < lam < 1 and lam != 0.5
    expected = lam * images + (1 - lam) * images.roll(1, 0)
    torch.testing.assert_close(mixed, expected)
    torch.testing.assert_close(soft, lam * F.one_hot(labels, 10) + (1 - lam) * F.one_hot(labels.roll(1, 0), 10))
    assert torch.equal(hard_labels(soft), torch.where(torch.tensor(lam >= 0.5), labels, labels.roll(1, 0)))


def test_cutmix_pastes_a_box_of_the_rolled_batch_weighted_by_its_area():
    images, labels = _batch()
    mixed, soft = BatchMix(10, cutmix_alpha=1.0, seed=1)(images, labels, epoch=0)
    assert torch.allclose(soft.sum(1), torch.ones(8))
    pasted = (mixed == images.roll(1, 0)).all(1)  # N×H×W: pixels taken from the neighbour image
    kept = (mixed == images).all(1)
    assert bool((pasted | kept).all()) and 0 < float(pasted.float().mean()) < 1
    area = pasted[0].float().mean()
    torch.testing.assert_close(soft[:, labels.roll(1, 0)].diagonal(), area.expand(8))


def test_both_on_picks_one_per_batch_and_the_stream_depends_only_on_seed_and_epoch():
    images, labels = _batch()
    kinds = set()
    mix = BatchMix(10, mixup_alpha=0.2, cutmix_alpha=1.0, seed=0)
    for epoch in range(12):
        mixed, _ = mix(images, labels, epoch)
        kinds.add("cutmix" if bool(((mixed == images) | (mixed == images.roll(1, 0))).all()) else "mixup")
    assert kinds == {"mixup", "cutmix"}
    torch.manual_seed(123)
    a = BatchMix(10, mixup_alpha=0.2, cutmix_alpha=1.0, seed=0)(images, labels, 5)
    torch.manual_seed(456)  # the global RNG does not matter
    b = BatchMix(10, mixup_alpha=0.2, cutmix_alpha=1.0, seed=0)(images, labels, 5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    off = BatchMix(10)(images, labels, 0)
    assert off[0] is images and off[1] is labels


def test_adn_teacher_and_student_see_the_same_mixed_batch_and_the_super_ce_uses_the_soft_targets():
    torch.manual_seed(0)
    model = adaptnet.create_model("resnet56_adn", 10)
    images, labels = _batch(n=4)
    mixed, soft = BatchMix(10, mixup_alpha=0.2, cutmix_alpha=1.0, seed=0)(images, labels, 0)
    seen = []
    handle = model.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    out = SuperBaseDistillation(alpha=0.5)(model, mixed, soft)
    handle.remove()
    assert len(seen) == 2 and all(torch.equal(x, mixed) for x in seen) and not torch.equal(mixed, images)
    torch.testing.assert_close(out.losses["ce_super"], 0.5 * _soft_ce(out.outputs["super"], soft))
    assert not torch.allclose(out.losses["ce_super"], 0.5 * F.cross_entropy(out.outputs["super"], labels))


def _imta():
    torch.manual_seed(0)
    return IMTANet(adaptnet.create_model("msdnet_cifar_budgeted", 10), 10)


@pytest.mark.parametrize("task_name", ["adn", "multi_exit", "imta"])
def test_soft_targets_and_label_smoothing_change_only_the_ce_terms(task_name):
    images, labels = _batch(n=4)
    soft = 0.7 * F.one_hot(labels, 10) + 0.3 * F.one_hot(labels.roll(1, 0), 10)
    if task_name == "adn":
        torch.manual_seed(0)
        model, make = adaptnet.create_model("resnet56_adn", 10), lambda ls: SuperBaseDistillation(0.5, 2.0, label_smoothing=ls)
    elif task_name == "multi_exit":
        torch.manual_seed(0)
        model = adaptnet.create_model("msdnet_cifar_budgeted", 10)
        make = lambda ls: MultiExitCE("equal", model.num_exits, label_smoothing=ls)  # noqa: E731
    else:
        model, make = _imta(), lambda ls: OneForAllKD(3.0, 0.9, label_smoothing=ls)
    model.eval()  # the same logits in both calls
    plain, smoothed = make(0.0)(model, images, soft), make(0.1)(model, images, soft)
    outputs = list(plain.outputs.values())
    for name, value in plain.losses.items():
        if name.startswith("ce_"):
            assert not torch.allclose(smoothed.losses[name], value), name
        else:  # KD terms are never smoothed
            assert torch.equal(smoothed.losses[name], value), name
    if task_name == "adn":
        torch.testing.assert_close(smoothed.losses["ce_super"], 0.5 * _soft_ce(outputs[0], soft, 0.1))
        torch.testing.assert_close(plain.losses["kd_base"], 0.5 * top_k_kd_loss(outputs[1], outputs[0], 2.0, None))
    elif task_name == "multi_exit":
        for k, z in enumerate(outputs, 1):
            torch.testing.assert_close(smoothed.losses[f"ce_exit{k}"], _soft_ce(z, soft, 0.1))
    else:
        last = len(outputs)
        torch.testing.assert_close(smoothed.losses[f"ce_exit{last}"], _soft_ce(outputs[-1], soft, 0.1))
        torch.testing.assert_close(smoothed.losses["ce_exit1"], 0.1 * _soft_ce(outputs[0], soft, 0.1))
        assert plain.losses["kd_exit1"] > 0


def _grad_norm(model):
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None])))


def test_clipping_bounds_the_total_gradient_norm():
    torch.manual_seed(0)
    model = adaptnet.create_model("resnet56_adn", 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    images, labels = _batch(n=4)
    SuperBaseDistillation()(model, images * 50, labels)  # both backward passes: the clip acts on their sum
    before = _grad_norm(model)
    assert before > 1.0
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    returned = clip_gradients(model, optimizer, scaler, 0.5)
    assert float(returned) == pytest.approx(before, rel=1e-5) and _grad_norm(model) == pytest.approx(0.5, rel=1e-4)
    assert clip_gradients(model, optimizer, scaler, None) is None


def test_clipping_unscales_amp_gradients_first():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    F.cross_entropy(model(x), y).backward()
    true = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(F.cross_entropy(model(x), y)).backward()
    norm = clip_gradients(model, optimizer, scaler, max_norm=100.0)  # above the true norm, below the scaled one
    assert float(norm) < 100.0
    for p, g in zip(model.parameters(), true):
        torch.testing.assert_close(p.grad, g)


def test_ema_decay_is_rescaled_as_the_reference():
    # Swin/ViT recipes: 4 GPUs × 256, every 32 steps, 300 epochs → ≈ 0.9978 (brief §2.3)
    assert effective_decay(0.99998, 1024, 32, 300) == pytest.approx(1 - 2e-5 * 1024 * 32 / 300)
    assert round(effective_decay(0.99998, 1024, 32, 300), 4) == 0.9978
    assert effective_decay(0.9, 1024, 32, 300) == 0.0  # α is capped at 1


def test_ema_updates_every_k_batches_copies_during_warmup_and_differs_from_live_weights():
    torch.manual_seed(0)
    live = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    ema = ModelEMA(live, decay=0.5, ema_steps=2, warmup_epochs=1)

    def nudge():
        with torch.no_grad():
            for p in live.parameters():
                p.add_(1.0)
        live.train()(torch.randn(4, 3))  # moves the BN running statistics too

    floats = lambda m: {k: v.clone() for k, v in m.state_dict().items() if v.is_floating_point()}  # noqa: E731
    for _ in range(3):  # warm-up epoch 0: batches 0 and 2 update, and each update is reset to a plain copy
        nudge()
        ema.after_step(live, epoch=0)
    assert int(ema.averaged.n_averaged) == 0
    assert all(torch.equal(v, floats(live)[k]) for k, v in floats(ema.module).items())
    nudge()
    ema.after_step(live, epoch=1)  # batch 0 of epoch 1: the first update after warm-up copies
    copied = floats(live)
    nudge()
    ema.after_step(live, epoch=1)  # batch 1: no update
    assert all(torch.equal(v, copied[k]) for k, v in floats(ema.module).items())
    nudge()
    ema.after_step(live, epoch=1)  # batch 2: decay·average + (1 − decay)·live
    for key, value in floats(ema.module).items():
        torch.testing.assert_close(value, 0.5 * copied[key] + 0.5 * floats(live)[key])
        assert not torch.equal(value, floats(live)[key]), key
    saved = {"model": live.state_dict(), "model_ema": ema.state_dict()}
    assert eval_weights(saved).keys() == live.state_dict().keys()
    assert all(torch.equal(v, ema.module.state_dict()[k]) for k, v in eval_weights(saved).items())
    plain = {"model": live.state_dict()}
    assert eval_weights(plain) is plain["model"]
