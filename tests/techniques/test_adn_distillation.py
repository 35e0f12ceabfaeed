import pytest
import torch
import torch.nn.functional as F

import adaptnet
from adaptnet.techniques import SuperBaseDistillation, top_k_kd_loss


@pytest.mark.parametrize("top_k", [None, 3, 100])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kl_term_matches_the_hand_formula(top_k, temperature):
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 6), torch.randn(4, 6)
    hand = torch.zeros(())
    for s_row, t_row in zip(student, teacher):
        keep = t_row.argsort(descending=True)[: top_k or 6]
        p = torch.softmax(t_row[keep] / temperature, 0)
        q = torch.softmax(s_row[keep] / temperature, 0)
        hand += (p * (p / q).log()).sum()
    hand = temperature ** 2 * hand / 4
    torch.testing.assert_close(top_k_kd_loss(student, teacher, temperature, top_k), hand)


def _grads(model):
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def test_each_parameter_group_gets_gradient_from_its_loss_only():
    torch.manual_seed(0)
    model = adaptnet.create_model("resnet56_adn", 10)
    images, labels = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    after = []

    def recording_backward(loss):
        loss.backward()
        after.append(_grads(model))

    out = SuperBaseDistillation(alpha=0.5, temperature=2.0)(model, images, labels, recording_backward)
    assert set(out.losses) == {"ce_super", "kd_base"} and set(out.outputs) == {"super", "base"}
    after_ce, after_kd = after
    skippable = {f"stages.{s}.{b}." for s, b, blk in model.blocks_with_position() if blk.skippable}
    nonzero = lambda g: g is not None and float(g.abs().sum()) > 0
    assert any("norm_skip" in name for name in after_kd) and skippable  # the groups below are not empty
    for name in after_kd:
        in_skippable = any(name.startswith(prefix) for prefix in skippable)
        if "norm_skip" in name:  # the student's norms: KD only
            assert not nonzero(after_ce[name]) and nonzero(after_kd[name]), name
        elif in_skippable:  # skippable blocks run only in the super-net: CE only
            assert nonzero(after_ce[name]) and torch.equal(after_kd[name], after_ce[name]), name
        elif ".norm." in name:  # regular norms of mandatory blocks: CE only
            assert nonzero(after_ce[name]) and torch.equal(after_kd[name], after_ce[name]), name
        else:  # shared convs, stem, shortcuts, fc: both
            assert nonzero(after_ce[name]) and not torch.equal(after_kd[name], after_ce[name]), name


def test_loss_values_are_alpha_weighted():
    torch.manual_seed(0)
    model = adaptnet.create_model("resnet56_adn", 10).train()
    images, labels = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    out = SuperBaseDistillation(alpha=0.3, temperature=1.0)(model, images, labels)
    torch.testing.assert_close(out.losses["ce_super"], 0.3 * F.cross_entropy(out.outputs["super"], labels))
    torch.testing.assert_close(out.losses["kd_base"], 0.7 * top_k_kd_loss(out.outputs["base"], out.outputs["super"], 1.0, None))


def test_ablations_ce_student_and_random_student():
    torch.manual_seed(0)
    model = adaptnet.create_model("resnet56_adn", 10)
    images, labels = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    out = SuperBaseDistillation(student_loss="ce")(model, images, labels)
    assert set(out.losses) == {"ce_super", "ce_base"}
    task = SuperBaseDistillation(student="random")
    picked = {task._student_skip(3) for _ in range(200)}
    assert (False, False, False) not in picked and len(picked) == 7


def test_the_student_is_the_mandatory_blocks_alone():
    """The KD student (base-net) is the stem, the mandatory blocks with their twins, and the head, computed
    by hand here: a skipped block is the identity, not run in any form."""
    torch.manual_seed(0)
    model = adaptnet.create_model("resnet56_adn", 10).train()
    images, labels = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    out = SuperBaseDistillation()(model, images, labels)
    h = model.stem(images)
    for _, _, block in model.blocks_with_position():
        if not block.skippable:
            h = block(h, True)
    torch.testing.assert_close(out.outputs["base"], model.fc(torch.flatten(model.pool(h), 1)), rtol=0, atol=1e-6)


def test_individual_baselines_train_one_depth_and_kd_individual_learns_from_a_frozen_teacher():
    """single_depth base: only the mandatory blocks (and their skip-mode norms) get gradient, CE of the base-net;
    depth_kd: α·CE + (1−α)·T²·KL(teacher super ‖ student base), the teacher frozen and in eval mode."""
    from adaptnet.techniques import DepthKD, SingleDepthCE

    torch.manual_seed(0)
    model = adaptnet.create_model("resnet56_adn", 10)
    images, labels = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    out = SingleDepthCE("base")(model, images, labels)
    skippable = {f"stages.{s}.{b}." for s, b, blk in model.blocks_with_position() if blk.skippable}
    for name, p in model.named_parameters():
        ran = not any(name.startswith(prefix) for prefix in skippable) and ".norm." not in name
        assert (p.grad is not None and float(p.grad.abs().sum()) > 0) == ran, name
    model.zero_grad()
    assert float(out.losses["ce_base"]) == pytest.approx(float(F.cross_entropy(model(images, skip=(True,) * 3), labels)))

    teacher = adaptnet.create_model("resnet56_adn", 10).train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    task = DepthKD(teacher, "base", alpha=0.3, temperature=2.0)
    out = task(model, images, labels)
    assert not teacher.training and all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # BN statistics too
    student, soft = model(images, skip=(True,) * 3), teacher(images, skip=(False,) * 3)
    assert float(out.losses["ce_base"]) == pytest.approx(0.3 * float(F.cross_entropy(student, labels)), rel=1e-5)
    assert float(out.losses["kd_base"]) == pytest.approx(0.7 * float(top_k_kd_loss(student, soft, 2.0, None)), rel=1e-5)
