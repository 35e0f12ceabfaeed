import pytest
import torch

import adaptnet
from adaptnet.metrics.costs import subnet_costs
from adaptnet.models import SkippableDepthNet, model_entry
from adaptnet.models.skippable import default_mandatory

ADN_MODELS = [m for m in adaptnet.list_models() if m.endswith("_adn")]

# torchvision-convention GMACs from the ADN README (brief §1.6, §4.3), within 1%.
REFERENCE_GMACS = {
    "resnet50_adn": {"FFFF": 4.11, "TFFF": 3.90, "TTFF": 3.46, "TTTF": 2.80, "TTTT": 2.58},
    "vit_b16_adn": {"FFFF": 17.58, "TTFF": 14.67, "TTFT": 13.21, "TTTT": 11.76},
}


@pytest.mark.parametrize("name", REFERENCE_GMACS)
def test_subnetwork_macs_match_the_readme(name):
    costs = {c.skip: c.macs for c in subnet_costs(adaptnet.create_model(name), 224)}
    assert len(costs) == 16
    for skip, gmacs in REFERENCE_GMACS[name].items():
        assert costs[skip] / 1e9 == pytest.approx(gmacs, rel=0.01), skip


def test_split_rule_and_stage_layout():
    assert [default_mandatory(n) for n in (3, 4, 6, 3, 23, 9)] == [2, 2, 3, 2, 12, 5]
    resnet50 = adaptnet.create_model("resnet50_adn")
    assert [sum(not b.skippable for b in stage) for stage in resnet50.stages] == [2, 2, 3, 2]
    vit = adaptnet.create_model("vit_b16_adn")
    assert [[b.skippable for b in stage] for stage in vit.stages] == [[False, False, True]] * 4
    custom = adaptnet.create_model("resnet56_adn", n_mandatory=[3, 4, 8])
    assert [sum(not b.skippable for b in stage) for stage in custom.stages] == [3, 4, 8]


@pytest.mark.parametrize("name", ADN_MODELS)
def test_every_subnetwork_runs_forward_and_backward_at_batch_2(name):
    entry = model_entry(name)
    model = adaptnet.create_model(name, 7)
    assert isinstance(model, SkippableDepthNet)
    x = torch.randn(2, 3, entry.input_size, entry.input_size)
    configs = model.skip_configs()
    assert len(configs) == 2 ** model.num_stages and configs[0] == (False,) * model.num_stages
    for skip in (configs[0], configs[-1]):
        out = model(x, skip=skip)
        assert out.shape == (2, 7)
        out.square().mean().backward()
    assert model(x).shape == (2, 7)  # default: the super-net


def test_skip_norm_twins_only_in_mandatory_blocks_and_not_in_stem_or_shortcut():
    model = adaptnet.create_model("resnet50_adn")
    for s, b, block in model.blocks_with_position():
        has_twin = block.bn1.norm_skip is not None
        assert has_twin == (not block.skippable)
    names = [n for n, _ in model.named_parameters() if "norm_skip" in n]
    assert names and not any(n.startswith(("stem", "fc")) or "shortcut" in n for n in names)
    plain = adaptnet.create_model("resnet50_adn", skip_aware_norms=False)
    assert not [n for n, _ in plain.named_parameters() if "norm_skip" in n]


@pytest.mark.parametrize("bad,error", [
    ((True, False), ValueError), ((False,) * 4, ValueError), (("True", False, False), TypeError),
    ((1, 0, 0), TypeError), ("TTT", TypeError), (True, TypeError),
])
def test_bad_skip_tuples_are_rejected(bad, error):
    model = adaptnet.create_model("resnet56_adn")
    with pytest.raises(error, match="skip"):
        model(torch.randn(1, 3, 32, 32), skip=bad)


def test_vit_initialisation_is_torchvisions():
    """The official ADN ViT is torchvision's VisionTransformer: per-tensor init spreads must be its."""
    import torchvision

    torch.manual_seed(0)
    ours = adaptnet.create_model("vit_b16_adn")
    tv = torchvision.models.vit_b_16()
    pairs = [(ours.conv_proj.weight, tv.conv_proj.weight), (ours.conv_proj.bias, tv.conv_proj.bias)]
    blocks = [b for _, _, b in ours.blocks_with_position()]
    for block, layer in zip(blocks, tv.encoder.layers):
        attn = layer.self_attention
        pairs += [(block.attention.qkv.weight, attn.in_proj_weight), (block.attention.qkv.bias, attn.in_proj_bias),
                  (block.attention.proj.weight, attn.out_proj.weight), (block.attention.proj.bias, attn.out_proj.bias),
                  (block.mlp[0].weight, layer.mlp[0].weight), (block.mlp[0].bias, layer.mlp[0].bias),
                  (block.mlp[3].weight, layer.mlp[3].weight), (block.mlp[3].bias, layer.mlp[3].bias)]
    pairs += [(ours.pos_embedding, tv.encoder.pos_embedding), (ours.head.weight, tv.heads.head.weight)]
    for mine, theirs in pairs:
        assert mine.shape == theirs.shape
        mine, theirs = mine.detach(), theirs.detach()
        if theirs.std() == 0:
            assert mine.abs().max() == 0
        else:
            assert float(mine.std()) == pytest.approx(float(theirs.std()), rel=0.1)
    # the numbers the issue measured against the official code
    assert float(ours.conv_proj.weight.std()) == pytest.approx(768 ** -0.5, rel=0.02)
    assert float(blocks[0].mlp[0].bias.std()) == pytest.approx(1e-6, rel=0.1)
    assert float(blocks[0].attention.qkv.bias.abs().max()) == 0
