"""GE on MSDNet-CIFAR (K = 7): every block gets the mean, not the sum, of its downstream exits' gradients."""
import pytest
import torch

import adaptnet

K = 7


def _models(scope):
    torch.manual_seed(0)
    plain = adaptnet.create_model("msdnet_cifar_anytime", 10).double()
    ge = adaptnet.create_model("msdnet_cifar_anytime", 10, ge_scope=scope).double()
    ge.load_state_dict(plain.state_dict())
    return plain, ge


def _block_output_grads(model, x, exit_index):
    """Gradient of exit `exit_index`'s loss at every scale of every block's output."""
    outputs = {}

    def keep(k):
        def hook(module, inputs, output):
            for t in output:
                t.retain_grad()
            outputs[k] = output
        return hook

    handles = [block.register_forward_hook(keep(k)) for k, block in enumerate(model.blocks)]
    logits = model(x)
    torch.nn.functional.cross_entropy(logits[exit_index], torch.tensor([1, 3])).backward()
    for h in handles:
        h.remove()
    return {k: [t.grad for t in out] for k, out in outputs.items() if k <= exit_index}


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_ge_is_the_identity_in_forward(images):
    plain, ge = _models("all")
    for a, b in zip(plain(images), ge(images)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("exit_index", range(K))
def test_scope_all_gives_one_over_k_minus_k_plus_1_on_every_scale(images, exit_index):
    plain, ge = _models("all")
    want, got = _block_output_grads(plain, images, exit_index), _block_output_grads(ge, images, exit_index)
    for k in want:  # k is 0-indexed: 1/(K-k) = 1/(K-k'+1) for the 1-indexed k'
        for g_plain, g_ge in zip(want[k], got[k]):
            if g_plain is None:  # a finer scale of the exit's own block does not reach the exit
                assert g_ge is None and k == exit_index
                continue
            torch.testing.assert_close(g_ge, g_plain / (K - k), rtol=1e-9, atol=1e-18)


@pytest.mark.parametrize("exit_index", [0, 3, 6])
def test_scope_coarsest_is_exact_on_the_coarsest_scale_only(images, exit_index):
    plain, ge = _models("coarsest")
    want, got = _block_output_grads(plain, images, exit_index), _block_output_grads(ge, images, exit_index)
    for k in want:
        torch.testing.assert_close(got[k][-1], want[k][-1] / (K - k), rtol=1e-9, atol=1e-18)
    # The official scope leaves finer scales with other factors (brief §2 caveat) once a later block is crossed.
    if exit_index >= 3:
        finer_ratio = (got[0][0].norm() / want[0][0].norm()).item()
        assert abs(finer_ratio - 1 / K) > 0.01


def test_ge_scope_is_checked_and_recorded():
    assert adaptnet.create_model("msdnet_cifar_budgeted", ge_scope="all").ge_scope == "all"
    assert adaptnet.create_model("msdnet_cifar_budgeted").ge_scope is None
