"""Per-exit cumulative cost against the reference counter's numbers (IMTA brief §1.3)."""
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import adaptnet
from adaptnet.metrics import exit_costs

# (model, classes): cumulative M multiply-adds per exit, cumulative M params at the last exit.
REFERENCE = {
    ("msdnet_cifar_anytime", 100): ([15.14, 25.51, 37.10, 46.33, 57.34, 66.96, 75.94], 3.068),
    ("msdnet_cifar_anytime", 10): ([15.13, 25.48, 37.06, 46.28, 57.28, 66.89, 75.86], 2.987),
    ("msdnet_cifar_budgeted", 100): ([6.86, 14.35, 27.54, 41.71, 58.48], 2.079),
    ("msdnet_cifar_budgeted", 10): ([6.85, 14.33, 27.50, 41.67, 58.42], 2.021),
    ("msdnet_cifar_anytime10", 10): ([15.13, 25.48, 37.75, 52.02, 62.12, 74.00, 87.65, 99.95, 110.02, 121.56], 4.840),
    ("msdnet_cifar_anytime10", 100): ([15.14, 25.51, 37.79, 52.06, 62.18, 74.07, 87.73, 100.04, 110.12, 121.68], 4.956),
    ("msdnet_cifar_budgeted7", 10): ([6.85, 14.33, 27.26, 48.40, 76.37, 108.78, 137.20], 3.885),
    ("msdnet_imagenet_step4", 1000): ([339.90, 685.46, 1008.16, 1254.47, 1360.53], 23.96),
    ("msdnet_imagenet_step6", 1000): ([514.66, 1171.18, 1844.52, 2501.40, 2742.06], 56.53),
    ("msdnet_imagenet_step7", 1000): ([615.69, 1436.39, 2283.21, 2967.42, 3253.79], 62.31),
}
FIRST_EXIT_PARAMS = {("msdnet_cifar_anytime", 100): 0.434, ("msdnet_cifar_budgeted", 100): 0.300,
                     ("msdnet_imagenet_step4", 1000): 4.24, ("msdnet_imagenet_step7", 1000): 8.76}


def test_every_registered_msdnet_has_a_reference_row():
    assert {name for name, _ in REFERENCE} == {m for m in adaptnet.list_models() if m.startswith("msdnet")}


@pytest.mark.parametrize("name,classes", list(REFERENCE))
def test_cumulative_exit_costs_match_the_reference_counter(name, classes):
    macs, params = REFERENCE[(name, classes)]
    costs = exit_costs(adaptnet.create_model(name, classes), 224 if "imagenet" in name else 32)
    assert [c.exit for c in costs] == list(range(1, len(macs) + 1))
    for got, want in zip(costs, macs):
        assert got.macs / 1e6 == pytest.approx(want, rel=0.005)
    assert costs[-1].params / 1e6 == pytest.approx(params, rel=0.005)
    if (name, classes) in FIRST_EXIT_PARAMS:
        assert costs[0].params / 1e6 == pytest.approx(FIRST_EXIT_PARAMS[(name, classes)], rel=0.005)
    model_params = sum(p.numel() for p in adaptnet.create_model(name, classes).parameters())
    assert costs[-1].params == model_params


def test_torchvision_convention_counts_only_conv_and_linear():
    model = adaptnet.create_model("msdnet_cifar_anytime", 10)
    reference = exit_costs(model, 32)
    plain = exit_costs(model, 32, convention="torchvision")
    assert all(p.macs < r.macs for p, r in zip(plain, reference))
    convs_and_linears = 0

    def count(module, inputs, output):
        nonlocal convs_and_linears
        if isinstance(module, nn.Conv2d):
            convs_and_linears += output.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, nn.Linear):
            convs_and_linears += output.numel() * module.in_features

    handles = [m.register_forward_hook(count) for m in model.modules()]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    for h in handles:
        h.remove()
    assert plain[-1].macs == convs_and_linears


class _OddLayer(nn.Module):
    """A layer no table knows: its matmul must still be counted, and nothing may crash."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 8))

    def forward(self, x):
        return torch.nn.functional.gelu(x @ self.weight)


class _TwoExitToy(adaptnet.models.MultiExitNet):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Sequential(nn.Flatten(), nn.LazyLinear(8)), _OddLayer()])
        self.heads = nn.ModuleList([_ToyHead(), _ToyHead()])


class _ToyHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)
        self.bn = nn.BatchNorm1d(8)

    def forward(self, x):
        return self.fc(self.bn(x)), x


def test_unknown_layers_are_counted_by_their_matmuls_and_do_not_crash():
    model = _TwoExitToy()
    model(torch.zeros(2, 3, 4, 4))  # materialise the lazy layer
    first, second = exit_costs(model, 4)
    linear_in = 3 * 4 * 4
    assert first.macs == linear_in * 8 + 8 + 8 * 3 + 3
    assert second.macs - first.macs == 8 * 8 + 8 * 3 + 3
    assert second.params == sum(p.numel() for p in model.parameters())


def test_costs_command_prints_json():
    out = subprocess.run([sys.executable, "-m", "adaptnet.cli", "costs", "msdnet_cifar_budgeted", "--num-classes", "100",
                          "--json"], capture_output=True, text=True, check=True).stdout
    report = json.loads(out)
    assert report["model"] == "msdnet_cifar_budgeted"
    assert [e["exit"] for e in report["exits"]] == [1, 2, 3, 4, 5]
    assert report["exits"][-1]["macs"] / 1e6 == pytest.approx(58.48, rel=0.005)
    assert report["exits"][0]["params"] / 1e6 == pytest.approx(0.300, rel=0.005)


def test_ptflops_convention_adds_norm_activation_pooling_and_bias_ops():
    """By hand on conv(3→4, 3×3, 8×8) → BN → ReLU6 → global pool → linear(4→5): torchvision keeps the
    6912 + 20 multiply-adds; ptflops adds 2 per BN element, 1 per ReLU6 element, the pooled elements and the
    linear's 5 biases (how MobileNetV2's 0.30 G becomes the ADN paper's 0.32 G)."""
    from adaptnet.metrics.costs import _Meter

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU6(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    counts = {}
    for convention in ("torchvision", "ptflops"):
        with _Meter(net, convention) as meter:
            net(torch.zeros(1, 3, 8, 8))
            counts[convention] = meter.read()
    assert counts["torchvision"] == (6912 + 20, 108 + 8 + 25)  # parameters: conv, BN affine, linear
    assert counts["ptflops"][0] == 6912 + 20 + 2 * 256 + 256 + 256 + 5
    with pytest.raises(ValueError, match="^convention"):
        _Meter(net, "thop")
