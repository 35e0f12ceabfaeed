"""Optimizer and learning-rate schedule: the per-epoch schedule against the torchvision reference's formula,
warm-up, weight decay groups (norms/biases, embeddings) and the optimizer each recipe asks for."""
import math

import pytest
import torch

import adaptnet
from adaptnet.loop import ConfigError, load_config
from adaptnet.loop.schedule import epoch_scheduler
from adaptnet.loop.trainer import build_optimizer, lr_factor

SWIN_OPTIM = ["optim.lr=1e-3", "optim.weight_decay=0.05", "optim.warmup_epochs=20", "optim.warmup_factor=0.01",
              "optim.min_lr=1e-5"]


def reference_lr(epoch, lr, epochs, warmup, factor, eta_min):
    """LinearLR(start_factor, total_iters=warmup), then CosineAnnealingLR(T_max=epochs − warmup, eta_min)."""
    if epoch < warmup:
        return lr * (factor + (1 - factor) * epoch / warmup)
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup))) / 2


def _epoch_lrs(cfg):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optim.lr)
    scheduler = epoch_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(cfg.train.epochs):
        lrs.append(optimizer.param_groups[0]["lr"])  # the learning rate of the whole epoch
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("overrides", [[], SWIN_OPTIM, ["optim.warmup_epochs=0"]], ids=["vit", "swin", "no-warmup"])
def test_per_epoch_schedule_equals_the_reference_formula(overrides):
    cfg = load_config("vit-b16-adn-paper", overrides)
    o = cfg.optim
    lrs = _epoch_lrs(cfg)
    expected = [reference_lr(e, o.lr, cfg.train.epochs, int(o.warmup_epochs), o.warmup_factor, o.min_lr)
                for e in range(cfg.train.epochs)]
    assert lrs == pytest.approx(expected, rel=1e-6, abs=1e-12)
    if o.warmup_epochs:
        assert lrs[0] == pytest.approx(o.lr * o.warmup_factor) and lrs[int(o.warmup_epochs)] == pytest.approx(o.lr)


def test_per_epoch_multistep_drops_at_the_recipe_epochs():
    lrs = _epoch_lrs(load_config("resnet50-adn-paper"))
    assert [lrs[e] for e in (0, 59, 60, 99, 100, 139, 140, 149)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-4])


def test_per_iteration_warmup_ramps_linearly_then_cosine_ends_at_min_lr():
    cfg = load_config("cifar10-smoke", ["train.epochs=10", "optim.schedule=cosine", "optim.warmup_epochs=2",
                                        "optim.warmup_factor=0.1", "optim.lr=0.1", "optim.min_lr=0.001"])
    assert cfg.optim.lr_step == "iteration"  # the default (MSDNet's official cosine is per iteration)
    spe = 5
    assert lr_factor(cfg, 0, spe) == pytest.approx(0.1)
    assert lr_factor(cfg, spe, spe) == pytest.approx(0.55)
    assert lr_factor(cfg, 2 * spe, spe) == pytest.approx(1.0)
    assert lr_factor(cfg, 10 * spe, spe) == pytest.approx(0.01)  # min_lr / lr
    assert lr_factor(cfg, 6 * spe, spe) == pytest.approx(0.01 + 0.99 * 0.5)


def test_per_epoch_needs_whole_warmup_epochs():
    with pytest.raises(ConfigError, match="^optim.lr_step: .*warm-up epochs"):
        load_config("vit-b16-adn-paper", ["optim.warmup_epochs=2.5"])


def _decay_of(optimizer):
    return {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}


def test_sgd_recipe_puts_no_decay_on_norms_and_biases():
    cfg = load_config("resnet50-adn-paper", ["model.name=resnet56_adn", "adn.top_k=null"])
    model = adaptnet.create_model("resnet56_adn", 10)
    optimizer = build_optimizer(cfg, model)
    assert type(optimizer) is torch.optim.SGD
    d = optimizer.defaults
    assert (d["lr"], d["momentum"], d["nesterov"], d["dampening"]) == (0.1, 0.9, False, 0)
    decay = _decay_of(optimizer)
    assert len(decay) == sum(1 for _ in model.parameters())  # every parameter exactly once
    norms = [m for m in model.modules() if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm))]
    assert norms and any("skip" in n for n, m in model.named_modules() if m in norms)  # twins included
    for module in norms:
        for p in module.parameters(recurse=False):
            assert decay[id(p)] == 0.0
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert decay[id(p)] == 0.0, name
        elif p.ndim > 1:
            assert decay[id(p)] == 1e-4, name


def test_adamw_recipe_decays_everything_and_embeddings_can_be_exempt():
    cfg = load_config("vit-b16-adn-paper", ["model.name=vit_t4_cifar_adn", "adn.top_k=null"])
    model = adaptnet.create_model("vit_t4_cifar_adn", 10)
    optimizer = build_optimizer(cfg, model)
    assert type(optimizer) is torch.optim.AdamW
    d = optimizer.defaults
    assert (d["lr"], d["betas"], d["eps"], d["amsgrad"]) == (7.5e-4, (0.9, 0.999), 1e-8, False)
    assert set(_decay_of(optimizer).values()) == {0.2}  # the release sets no norm/bias decay for ViT

    exempt = build_optimizer(load_config("vit-b16-adn-paper", ["model.name=vit_t4_cifar_adn", "adn.top_k=null",
                                                               "optim.embedding_weight_decay=0.0"]), model)
    decay = _decay_of(exempt)
    assert len(decay) == sum(1 for _ in model.parameters())
    for name, p in model.named_parameters():
        embedding = name.rsplit(".", 1)[-1] in ("class_token", "pos_embedding")
        assert decay[id(p)] == (0.0 if embedding else 0.2), name
    assert sum(1 for n, _ in model.named_parameters() if n.rsplit(".", 1)[-1] in ("class_token", "pos_embedding")) == 2
