import pytest
import torch
import torch.nn.functional as F

import adaptnet
from adaptnet.techniques import IMTANet, ISCHeads, OneForAllKD, kd_loss


@pytest.mark.filterwarnings("ignore:reduction. .mean. divides")
@pytest.mark.parametrize("reduction,divisor", [("official", "NC"), ("batchmean", "N")])
@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_kd_loss_matches_the_hand_formula(reduction, divisor, temperature):
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    p_t = torch.softmax(teacher / temperature, 1)
    log_p_s = torch.log_softmax(student / temperature, 1)
    kl_sum = (p_t * (p_t.log() - log_p_s)).sum()
    hand = temperature ** 2 * kl_sum / (20 if divisor == "NC" else 4)
    torch.testing.assert_close(kd_loss(student, teacher, temperature, reduction), hand)
    if reduction == "official":  # the official code: nn.KLDivLoss() with its default 'mean'
        official = torch.nn.KLDivLoss()(log_p_s, p_t) * temperature ** 2
        torch.testing.assert_close(kd_loss(student, teacher, temperature, reduction), official)


def test_kd_teacher_gets_no_gradient():
    student, teacher = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    kd_loss(student, teacher, 2.0).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0


def _isc_grads(detach):
    torch.manual_seed(0)
    heads = ISCHeads([6, 6, 6], num_classes=4, isc_detach=detach)
    features = [torch.randn(5, 6) for _ in range(3)]
    logits = heads(features)
    F.cross_entropy(logits[2], torch.tensor([0, 1, 2, 3, 0])).backward()  # only the last exit's loss
    return {name: p.grad.clone() if p.grad is not None else None for name, p in heads.named_parameters()}


def test_isc_detach_removes_exactly_the_path_into_earlier_exits():
    attached, detached = _isc_grads(False), _isc_grads(True)
    # Code behaviour: exit 3's loss reaches exits 1 and 2 through the collaborators.
    assert attached["classifiers.0.weight"].abs().sum() > 0 and attached["classifiers.1.weight"].abs().sum() > 0
    assert attached["collaborators.0.0.weight"].abs().sum() > 0
    # Paper behaviour: it reaches only its own classifier and its own collaborator.
    for name in ("classifiers.0.weight", "classifiers.1.weight", "collaborators.0.0.weight"):
        assert detached[name] is None or detached[name].abs().sum() == 0
    for name in ("classifiers.2.weight", "collaborators.1.0.weight"):
        torch.testing.assert_close(detached[name], attached[name])


def test_isc_heads_read_previous_logits_and_current_feature():
    heads = ISCHeads([3, 4], num_classes=2)
    assert heads.classifiers[1].in_features == 8
    assert heads.collaborators[0][0].in_features == 2 and isinstance(heads.collaborators[0][1], torch.nn.BatchNorm1d)


def test_one_for_all_task_weights_and_teacher():
    torch.manual_seed(0)
    backbone = adaptnet.create_model("msdnet_cifar_budgeted", 10)
    net = IMTANet(backbone, 10, freeze_backbone=True)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    task = OneForAllKD(temperature=2.0, gamma=0.25, reduction="batchmean", teacher="stage1")
    torch.manual_seed(1)
    net.zero_grad()
    out = task(net, images, labels)
    assert set(out.outputs) == {f"exit{k}" for k in range(1, 6)}
    assert set(out.losses) == {f"ce_exit{k}" for k in range(1, 6)} | {f"kd_exit{k}" for k in range(1, 5)}
    torch.manual_seed(1)
    logits, backbone_logits = net(images, return_backbone=True)
    torch.testing.assert_close(out.losses["ce_exit5"], F.cross_entropy(logits[-1], labels))
    torch.testing.assert_close(out.losses["ce_exit2"], 0.75 * F.cross_entropy(logits[1], labels))
    torch.testing.assert_close(out.losses["kd_exit1"], 0.25 * kd_loss(logits[0], backbone_logits[-1], 2.0, "batchmean"))
    # the task has back-propagated its losses:
    assert all(p.grad is None for p in net.backbone.parameters())
    assert all(p.grad is not None for p in net.isc.parameters())


def test_frozen_backbone_bn_mode_flag():
    net = IMTANet(adaptnet.create_model("msdnet_cifar_budgeted", 10), 10, freeze_backbone=True, backbone_bn_train=False)
    net.train()
    assert not net.backbone.training and net.isc.training
    official = IMTANet(adaptnet.create_model("msdnet_cifar_budgeted", 10), 10, freeze_backbone=True)
    official.train()
    assert official.backbone.training
