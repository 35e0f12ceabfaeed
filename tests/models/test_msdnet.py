import pytest
import torch

import adaptnet
from adaptnet.models import model_entry
from adaptnet.models.msdnet import block_steps, kept_scales


@pytest.mark.parametrize("name", [m for m in adaptnet.list_models() if m.startswith("msdnet")])
def test_forward_backward_at_batch_2(name):
    entry = model_entry(name)
    model = adaptnet.create_model(name, 7)
    x = torch.randn(2, 3, entry.input_size, entry.input_size)
    logits, features = model(x, return_features=True)
    assert len(logits) == len(features) == model.num_exits == entry.kwargs["n_blocks"]
    assert all(z.shape == (2, 7) for z in logits)
    assert [f.shape[1] for f in features] == model.feature_dims
    sum(z.square().mean() for z in logits).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_block_layout_and_scale_pruning_follow_the_reference():
    assert block_steps(7, 4, 2, "even") == [4, 2, 2, 2, 2, 2, 2]
    assert block_steps(5, 1, 1, "lin_grow") == [1, 2, 3, 4, 5]
    # CIFAR anytime: 16 layers, interval 6 → layer 7 drops to 2 scales, layer 13 to 1.
    scales = [kept_scales(layer, 16, 3, "max") for layer in range(1, 17)]
    assert scales[5] == (3, 3) and scales[6] == (3, 2) and scales[7] == (2, 2)
    assert scales[12] == (2, 1) and scales[15] == (1, 1)


def test_cifar_anytime_widths_match_the_reference_printout():
    model = adaptnet.create_model("msdnet_cifar_anytime", 100)
    # The last exit reads 50 base channels ×4 at the coarsest scale; ImageNet exits read logits_channels.
    assert model.heads[-1].features[0][0].in_channels == 200
    imagenet = adaptnet.create_model("msdnet_imagenet_step7")
    assert [h.features[0][0].in_channels for h in imagenet.heads] == [576, 640, 608, 528, 976]
    assert [h.feature_dim for h in adaptnet.create_model("msdnet_imagenet_step4").heads] == [384, 384, 352, 304, 560]


def test_default_init_is_pytorchs_and_he_init_is_opt_in():
    torch.manual_seed(0)
    default = adaptnet.create_model("msdnet_cifar_anytime")
    torch.manual_seed(0)
    he = adaptnet.create_model("msdnet_cifar_anytime", he_init=True)
    conv = lambda m: m.blocks[0][1].layers[0].conv_normal[3]  # first 3×3 conv of layer 1, scale 0
    assert float(conv(he).weight.detach().std()) == pytest.approx((2 / (9 * conv(he).out_channels)) ** 0.5, rel=0.15)
    assert float(conv(default).weight.detach().std()) < 0.7 * float(conv(he).weight.detach().std())
    assert all(float(h.linear.bias.detach().abs().sum()) == 0 for h in he.heads)


@pytest.mark.parametrize("bad", [dict(stepmode="odd"), dict(prune="mean"), dict(data="svhn"),
                                 dict(bottleneck="False"), dict(ge_scope="some")])
def test_bad_constructor_arguments_are_rejected(bad):
    with pytest.raises((ValueError, TypeError)) as err:
        adaptnet.create_model("msdnet_cifar_anytime", **bad)
    assert next(iter(bad)) in str(err.value)


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="msdnet_cifar_anytime"):
        adaptnet.create_model("resnet9000")
