"""An ADN sub-network extracted as a static network: exactly the kept blocks' parameters, the same logits."""
import pytest
import torch

import adaptnet
from adaptnet.deploy import DeployError
from adaptnet.deploy.subnet import extract_subnet, parse_skip
from adaptnet.metrics.costs import skip_string, subnet_costs


def _randomise_norms(model, seed=0):
    """Fresh BN/LN statistics and affine parameters, so a norm and its skip twin really differ."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
            m.weight.data = 0.5 + torch.rand(m.weight.shape, generator=g)
            m.bias.data = torch.randn(m.bias.shape, generator=g) * 0.1
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean = torch.randn(m.running_mean.shape, generator=g) * 0.1
            m.running_var = 0.5 + torch.rand(m.running_var.shape, generator=g)
    return model.eval()


@pytest.mark.parametrize("name,size", [("resnet56_adn", 32), ("vit_t4_cifar_adn", 32)])
def test_extracted_subnetwork_has_the_kept_parameters_and_the_same_logits(name, size):
    torch.manual_seed(0)
    model = _randomise_norms(adaptnet.create_model(name, 10))
    if name.startswith("vit"):
        torch.nn.init.normal_(model.head.weight, std=0.02)
    x = torch.randn(4, 3, size, size)
    costs = {c.skip: c for c in subnet_costs(model, size)}
    for skip in [(True, False, True), (False,) * 3, (True,) * 3] if name.startswith("resnet") else \
            [(True, False, True, False), (True,) * 4]:
        sub = extract_subnet(model, skip)
        names = [n for n, _ in sub.named_parameters()]
        assert sum(p.numel() for p in sub.parameters()) == costs[skip_string(skip)].params
        assert not any("norm_skip" in n for n in names)
        for s, stage_skipped in enumerate(skip):  # skipped stages keep only their mandatory blocks
            expected = [b for b in model.stages[s] if not (b.skippable and stage_skipped)]
            assert len(sub.net.stages[s]) == len(expected)
        with torch.no_grad():
            reference, static = model(x, skip=skip), sub(x)
        assert (reference - static).abs().max() <= 1e-5
        if any(skip):  # the twins matter: the super-net's norms on the pruned path give other logits
            with torch.no_grad():
                assert (model(x, skip=tuple(False for _ in skip)) - static).abs().max() > 1e-3
    assert sub.net is not model and model.stages[0][-1].skippable  # the original is untouched


def test_skip_strings_are_checked_in_one_line():
    assert parse_skip("TFT", 3) == (True, False, True)
    for bad in ("TF", "TFX", "tft", ""):
        with pytest.raises(DeployError, match=r"^skip: expected 3 letters T/F"):
            parse_skip(bad, 3)
