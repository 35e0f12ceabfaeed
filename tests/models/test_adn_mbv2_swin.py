"""MobileNetV2-ADN and Swin-T-ADN against the paper's GFLOPs and torchvision's plain models (ADN brief §1.3,
§1.5, §4.2)."""
import json

import pytest
import torch
import torchvision

import adaptnet
from adaptnet.cli import main as cli_main
from adaptnet.metrics.costs import _Meter


def _cli_costs(capsys, name, *flags):
    assert cli_main(["costs", name, "--json", *flags]) == 0
    return {row["skip"]: row for row in json.loads(capsys.readouterr().out)["configs"]}


def _macs(model, size=224, **kwargs):
    """torchvision-convention MACs of one forward (a plain torchvision model, or one sub-network)."""
    with _Meter(model, "torchvision") as meter:
        model(torch.zeros(1, 3, size, size), **kwargs)
        return meter.read()[0]


def _one_stage(stage, num_stages):
    return "".join("T" if s == stage else "F" for s in range(num_stages))


def test_mbv2_costs_are_the_papers_in_ptflops_convention_and_savings_the_briefs_in_torchvision(capsys):
    paper = _cli_costs(capsys, "mobilenet_v2_adn")  # the registry's convention for it: ptflops
    assert len(paper) == 32 and list(paper)[0] == "FFFFF" and list(paper)[-1] == "TTTTT"
    assert round(paper["FFFFF"]["macs"] / 1e9, 2) == 0.32 and round(paper["TTTTT"]["macs"] / 1e9, 2) == 0.22
    tv = _cli_costs(capsys, "mobilenet_v2_adn", "--torchvision")
    plain = torchvision.models.mobilenet_v2()
    assert tv["FFFFF"]["macs"] == _macs(plain)  # nothing skipped: torchvision's own count
    savings = [tv["FFFFF"]["macs"] - tv[_one_stage(s, 5)]["macs"] for s in range(5)]
    for got, want in zip(savings, (0.026, 0.011, 0.021, 0.023, 0.016)):
        assert got / 1e9 == pytest.approx(want, rel=0.05)
    for skip, row in tv.items():  # every configuration: the super-net less the skipped stages' savings
        assert row["macs"] == tv["FFFFF"]["macs"] - sum(sv for sv, s in zip(savings, skip) if s == "T"), skip


SWIN_PAPER = {"FFFF": 4.49, "TFFF": 4.11, "TTFF": 3.75, "TTTT": 2.34}


def test_swin_costs_match_the_paper_and_count_the_window_attention(capsys):
    costs = _cli_costs(capsys, "swin_t_adn")
    assert len(costs) == 16
    for skip, gmacs in SWIN_PAPER.items():
        assert costs[skip]["macs"] / 1e9 == pytest.approx(gmacs, rel=0.01), skip
    assert costs["FFFF"]["macs"] == _macs(torchvision.models.swin_t())
    # Skipping stage s removes its skippable blocks, each 12·N·C² (linears) + 2·N·M²·C (q·kᵀ and attn·v
    # over M×M windows): the attention matmuls are in the count.
    for s, (tokens, dim, skipped) in enumerate([(56 ** 2, 96, 1), (28 ** 2, 192, 1), (14 ** 2, 384, 3), (7 ** 2, 768, 1)]):
        per_block = 12 * tokens * dim ** 2 + 2 * tokens * 49 * dim
        assert costs["FFFF"]["macs"] - costs[_one_stage(s, 4)]["macs"] == skipped * per_block


@pytest.mark.parametrize("name,plain", [("mobilenet_v2_adn", torchvision.models.mobilenet_v2),
                                        ("swin_t_adn", torchvision.models.swin_t)])
def test_parameters_are_torchvisions_plus_the_norm_twins(name, plain):
    tv = sum(p.numel() for p in plain().parameters())
    no_twins = adaptnet.create_model(name, skip_aware_norms=False)
    assert sum(p.numel() for p in no_twins.parameters()) == tv
    model = adaptnet.create_model(name)
    twins = sum(p.numel() for n, p in model.named_parameters() if "norm_skip" in n)
    assert twins > 0 and sum(p.numel() for p in model.parameters()) == tv + twins
    # a sub-network's parameter count is the parameters it uses: the super-net uses no twin
    with _Meter(model, "torchvision") as meter:
        model(torch.zeros(1, 3, 64, 64))
    assert meter.read()[1] == tv


def test_split_and_twins_follow_the_official_layout():
    mbv2 = adaptnet.create_model("mobilenet_v2_adn")
    assert [[b.skippable for b in st] for st in mbv2.stages] == [
        [False, True], [False, False, True], [False, False, True, True], [False, False, True], [False, False, True]]
    assert [st[-1].layers[-1].conv.out_channels for st in mbv2.stages] == [24, 32, 64, 96, 160]
    # the stem and the t=1 block, the c=320 block and the last 1×1 conv are outside the stages, with twins
    assert len(mbv2.head_layers) == 2 and len(mbv2.tail_layers) == 2
    assert mbv2.tail_layers[0].layers[-1].conv.out_channels == 320
    swin = adaptnet.create_model("swin_t_adn")
    assert [[b.skippable for b in st] for st in swin.stages] == [[False, True], [False, True],
                                                                  [False] * 3 + [True] * 3, [False, True]]
    # in stages 1, 2 and 4 the skipped block is the shifted-window one
    assert [st[-1].attn.shift_size for st in swin.stages] == [[3, 3]] * 4
    assert all(m.norm.norm_skip is not None for m in swin.merges) and len(swin.merges) == 3


def test_swin_drop_path_linear_to_0_1_in_the_super_path_and_off_in_the_base_path():
    swin = adaptnet.create_model("swin_cifar_adn")  # the same default as swin_t_adn's
    rates = [b.drop_path.p for st in swin.stages for b in st]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.1) and rates == sorted(rates)
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    for drop_path_in_base in (False, True):
        model = adaptnet.create_model("swin_cifar_adn", stochastic_depth_prob=0.9,
                                      drop_path_in_base=drop_path_in_base).train()
        base = [model(x, skip=(True,) * 3) for _ in range(2)]
        super_ = [model(x) for _ in range(2)]
        assert not torch.allclose(*super_)
        assert torch.allclose(*base) != drop_path_in_base  # base runs deterministically unless asked


def test_cifar_variants_shapes_and_costs():
    mb = adaptnet.create_model("mobilenet_v2_cifar_adn")
    swin = adaptnet.create_model("swin_cifar_adn")
    assert mb.num_stages == 5 and swin.num_stages == 3
    for model in (mb, swin):
        assert len(model.skip_configs()) == 2 ** model.num_stages
        super_macs, base_macs = (_macs(model, 32, skip=(s,) * model.num_stages) for s in (False, True))
        assert base_macs < super_macs
    # stride-1 stem and first skippable stage: 32×32 feature maps there
    feats = {}
    mb.stages[0][0].register_forward_hook(lambda m, i, o: feats.update(stage1=o.shape[-1]))
    mb(torch.zeros(1, 3, 32, 32))
    assert feats["stage1"] == 32
