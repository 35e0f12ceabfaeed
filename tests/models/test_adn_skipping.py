"""Peer-style checks of every CIFAR-scale ADN family: a skipped sub-path is not run and is the identity, and
each skip-aware norm twin is used exactly when its routing flag says so (ADN brief §1.1, §8)."""
import pytest
import torch

import adaptnet
from adaptnet.models.mobilenet_adn import MobileNetV2ADN
from adaptnet.models.resnet_adn import ResNetADN
from adaptnet.models.skippable import SkipNorm
from adaptnet.models.swin_adn import SwinTransformerADN
from adaptnet.models.vit_adn import VisionTransformerADN

CIFAR_ADN = ["resnet56_adn", "vit_t4_cifar_adn", "mobilenet_v2_cifar_adn", "swin_cifar_adn"]


def _some_configs(model):
    """Super, base, the two alternating configs (every stage skipped and kept, next to either) and the two
    half splits (first and last stage with different flags, as MobileNetV2's outer layers need)."""
    n = model.num_stages
    alternating = tuple(s % 2 == 0 for s in range(n))
    half = tuple(s < n // 2 for s in range(n))
    return [(False,) * n, (True,) * n, alternating, tuple(not f for f in alternating), half,
            tuple(not f for f in half)]


def _kept_forward(model, x, skip):
    """The sub-network written out by hand: only the kept blocks, in order, each told its stage's flag."""
    def stage(h, s):
        for block in model.stages[s]:
            if not (block.skippable and skip[s]):
                h = block(h, skip[s])
        return h

    stages = range(model.num_stages)
    if isinstance(model, ResNetADN):
        h = model.stem(x)
        for s in stages:
            h = stage(h, s)
        return model.fc(torch.flatten(model.pool(h), 1))
    if isinstance(model, VisionTransformerADN):
        tokens = model.conv_proj(x).flatten(2).transpose(1, 2)
        h = torch.cat([model.class_token.expand(len(x), -1, -1), tokens], 1) + model.pos_embedding
        for s in stages:
            h = stage(h, s)
        return model.head(model.ln(h)[:, 0])
    if isinstance(model, MobileNetV2ADN):
        h = x
        for layer in model.head_layers:
            h = layer(h, skip[0])
        for s in stages:
            h = stage(h, s)
        for layer in model.tail_layers:
            h = layer(h, skip[-1])
        return model.classifier(torch.flatten(model.pool(h), 1))
    assert isinstance(model, SwinTransformerADN)
    h = model.patch_embed(x)
    for s in stages:
        h = stage(model.merges[s - 1](h, skip[s]) if s else h, s)
    return model.head(model.norm(h).mean(dim=(1, 2)))


def _seeded_eval_model(name):
    torch.manual_seed(0)
    model = adaptnet.create_model(name).eval()
    if isinstance(model, VisionTransformerADN):  # its zero-initialised head would hide any difference
        torch.nn.init.normal_(model.head.weight)
    return model


@pytest.mark.parametrize("name", CIFAR_ADN)
def test_a_skipped_sub_path_is_not_run_and_is_the_identity(name):
    model = _seeded_eval_model(name)
    ran = []
    for _, _, block in model.blocks_with_position():
        block.register_forward_hook(lambda m, i, o: ran.append(m))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        for skip in _some_configs(model):
            ran.clear()
            out = model(x, skip=skip)
            expected = [b for s, _, b in model.blocks_with_position() if not (b.skippable and skip[s])]
            assert [id(b) for b in ran] == [id(b) for b in expected], skip
            ran.clear()
            torch.testing.assert_close(out, _kept_forward(model, x, skip), rtol=0, atol=0)
    assert len(expected) < sum(1 for _ in model.blocks_with_position())  # the base-net ran fewer blocks
    with torch.no_grad():  # no skip given: the super-net, for every model
        assert torch.equal(model(x), model(x, skip=(False,) * model.num_stages))


def _norm_routes(model):
    """SkipNorm → the stage whose flag selects its branch, from the official routing (brief §1.3, §1.5)."""
    routes = {}

    def route(module, s):
        routes.update({id(m): s for m in module.modules() if isinstance(m, SkipNorm)})

    for s, _, block in model.blocks_with_position():
        route(block, s)
    if isinstance(model, MobileNetV2ADN):  # stem + t=1 block follow skip[0]; c=320 block + last conv skip[-1]
        route(model.head_layers, 0)
        route(model.tail_layers, model.num_stages - 1)
    if isinstance(model, SwinTransformerADN):  # the merging before stage k follows stage k's flag
        for k, merge in enumerate(model.merges, 1):
            route(merge, k)
    return routes


@pytest.mark.parametrize("name", CIFAR_ADN)
def test_each_norm_twin_is_used_exactly_when_its_stage_is_skipped(name):
    model = adaptnet.create_model(name).eval()
    routes = _norm_routes(model)
    norms = {id(m): m for m in model.modules() if isinstance(m, SkipNorm)}
    assert set(routes) == set(norms)  # every switchable norm has a known route
    skippable = {id(m) for _, _, b in model.blocks_with_position() if b.skippable for m in b.modules()}
    for key, norm in norms.items():  # twins in every layer that runs in skipped mode, and only there
        assert (norm.norm_skip is not None) == (key not in skippable)
    used = []
    for key, norm in norms.items():
        norm.norm.register_forward_hook(lambda m, i, o, key=key: used.append((key, False)))
        if norm.norm_skip is not None:
            norm.norm_skip.register_forward_hook(lambda m, i, o, key=key: used.append((key, True)))
    x = torch.randn(1, 3, 32, 32)
    twins_used = set()
    with torch.no_grad():
        for skip in _some_configs(model):
            used.clear()
            model(x, skip=skip)
            assert used and all(twin == skip[routes[key]] for key, twin in used), skip
            twins_used |= {key for key, twin in used if twin}
    assert twins_used == {k for k, n in norms.items() if n.norm_skip is not None}


def test_twins_change_exactly_the_sub_networks_that_route_to_them():
    """Numerically: perturbing stage 2's twins moves the outputs of configs skipping stage 2, and no other."""
    model = adaptnet.create_model("mobilenet_v2_cifar_adn").eval()
    x = torch.randn(1, 3, 32, 32)
    configs = _some_configs(model)
    with torch.no_grad():
        before = {c: model(x, skip=c) for c in configs}
        for m in model.stages[1].modules():
            if isinstance(m, SkipNorm) and m.norm_skip is not None:
                m.norm_skip.bias.add_(0.5)
        for c in configs:
            assert torch.equal(model(x, skip=c), before[c]) != c[1], c


@pytest.mark.parametrize("name", CIFAR_ADN)
def test_all_sub_networks_at_once_equal_each_alone_and_share_their_common_stages(name):
    model = _seeded_eval_model(name)
    for m in model.modules():  # twins that differ from their norms, so that a wrong route would show
        if isinstance(m, SkipNorm) and m.norm_skip is not None:
            torch.nn.init.normal_(m.norm_skip.bias)
    first_blocks = [stage[0] for stage in model.stages]  # mandatory: they run in every sub-network
    runs = [0] * model.num_stages
    for s, block in enumerate(first_blocks):
        block.register_forward_hook(lambda m, i, o, s=s: runs.__setitem__(s, runs[s] + 1))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        together = model.subnet_logits(x)
        assert runs == [2 ** (s + 1) for s in range(model.num_stages)]  # stage s once per prefix, not 2^S times
        assert list(together) == model.skip_configs()
        outputs = {skip: model(x, skip=skip) for skip in model.skip_configs()}
    for skip, logits in together.items():
        assert torch.equal(logits, outputs[skip]), skip
    assert len({tuple(o.flatten().tolist()) for o in outputs.values()}) == len(outputs)  # all 2^S differ
