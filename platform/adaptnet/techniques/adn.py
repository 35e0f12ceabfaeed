"""ADN super-net → base-net self-distillation (Kang & Lee, NeurIPS 2024; brief §2.1).

One step (the teacher and the student see the same, possibly MixUp/CutMix-mixed, batch and soft targets):
super forward → α·CE (label-smoothed when asked) → backward (frees the super graph; under DDP without an
all-reduce); base forward → (1−α)·T²·KL(teacher ‖ student) over the teacher's top-K classes → backward (one
all-reduce of both passes' gradients); then one optimizer step.
Ablations of brief §8: CE on the student instead of KD (`student_loss="ce"`) and a random sub-network
as the student (`student="random"`); skip-aware norms are switched off at the model (`skip_aware_norms`).
The paper's baselines: one depth trained alone (`SingleDepthCE`) and distilled from a trained super-net (`DepthKD`).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..models.skippable import SkippableDepthNet
from .tasks import Backward, TaskOutput, plain_backward, without_sync


def top_k_kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """T²·KL(softmax(t/T) ‖ softmax(s/T)), batch-mean, both renormalised over the teacher's top-K classes
    (all classes when K is None or ≥ C); the teacher is detached."""
    teacher = teacher.detach()
    if top_k is not None and top_k < teacher.shape[1]:
        classes = teacher.topk(top_k, dim=1).indices
        teacher, student = teacher.gather(1, classes), student.gather(1, classes)
    log_student = F.log_softmax(student / temperature, dim=1)
    soft_teacher = F.softmax(teacher / temperature, dim=1)
    return temperature ** 2 * F.kl_div(log_student, soft_teacher, reduction="batchmean")


class SuperBaseDistillation:
    find_unused_parameters = True  # skippable blocks sit out the student pass, skip twins the teacher pass

    def __init__(self, alpha: float = 0.5, temperature: float = 1.0, top_k: int | None = None,
                 student: Literal["base", "random"] = "base", student_loss: Literal["kd", "ce"] = "kd",
                 label_smoothing: float = 0.0):
        if student not in ("base", "random") or student_loss not in ("kd", "ce"):
            raise ValueError(f"student/student_loss: got {student!r}/{student_loss!r}")
        self.alpha, self.temperature, self.top_k = alpha, temperature, top_k
        self.student, self.student_loss = student, student_loss
        self.label_smoothing = label_smoothing

    def _student_skip(self, num_stages: int) -> tuple[bool, ...]:
        if self.student == "base":
            return (True,) * num_stages
        code = int(torch.randint(1, 2 ** num_stages, ()))  # any sub-network but the super-net
        return tuple(bool(code >> (num_stages - 1 - s) & 1) for s in range(num_stages))

    def __call__(self, model, images: torch.Tensor, labels: torch.Tensor, backward: Backward = plain_backward) -> TaskOutput:
        net: SkippableDepthNet = getattr(model, "module", model)  # DDP wraps; the stage count is the net's
        stages = net.num_stages
        with without_sync(model):  # the student's backward all-reduces both passes' gradients at once
            teacher = model(images, skip=(False,) * stages)
        super_loss = self.alpha * F.cross_entropy(teacher, labels, label_smoothing=self.label_smoothing)
        backward(super_loss)  # frees the super-net graph before the student runs: peak memory ≈ one pass
        student = model(images, skip=self._student_skip(stages))
        if self.student_loss == "kd":
            name, raw = "kd_base", top_k_kd_loss(student, teacher, self.temperature, self.top_k)
        else:
            name, raw = "ce_base", F.cross_entropy(student, labels, label_smoothing=self.label_smoothing)
        student_loss = (1 - self.alpha) * raw
        backward(student_loss)
        return TaskOutput({"ce_super": super_loss, name: student_loss},
                          {"super": teacher.detach(), "base": student.detach()})


def depth_skip(model, depth: str) -> tuple[bool, ...]:
    """The skip config of one depth: the super-net runs every block, the base-net only the mandatory ones."""
    net: SkippableDepthNet = getattr(model, "module", model)
    return (depth == "base",) * net.num_stages


class SingleDepthCE:
    """One sub-network trained on its own with CE, the way the paper's individually trained baselines are: the
    super-net (every block) or the base-net (the mandatory blocks only; the skippable ones never run)."""

    find_unused_parameters = True  # the other depth's blocks or norm twins get no gradient

    def __init__(self, depth: Literal["super", "base"] = "super", label_smoothing: float = 0.0):
        self.depth, self.label_smoothing = depth, label_smoothing

    def __call__(self, model, images: torch.Tensor, labels: torch.Tensor, backward: Backward = plain_backward) -> TaskOutput:
        logits = model(images, skip=depth_skip(model, self.depth))
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        backward(loss)
        return TaskOutput({f"ce_{self.depth}": loss}, {self.depth: logits.detach()})


class DepthKD:
    """The paper's "KD individual": one depth of a fresh network trained alone, distilled from a trained, frozen
    teacher (its super-net). The paper gives no loss for it; this is Hinton's KD with ADN's settings:
    α·CE(student) + (1−α)·T²·KL(teacher ‖ student) over the teacher's top-K classes."""

    find_unused_parameters = True

    def __init__(self, teacher: nn.Module, depth: Literal["super", "base"] = "base", alpha: float = 0.5,
                 temperature: float = 1.0, top_k: int | None = None, label_smoothing: float = 0.0):
        self.teacher = teacher.eval().requires_grad_(False)
        self.depth, self.alpha, self.temperature, self.top_k = depth, alpha, temperature, top_k
        self.label_smoothing = label_smoothing

    def __call__(self, model, images: torch.Tensor, labels: torch.Tensor, backward: Backward = plain_backward) -> TaskOutput:
        if next(self.teacher.parameters()).device != images.device:
            self.teacher.to(images.device)  # once: the loop moves only the trained model
        with torch.no_grad():
            teacher = self.teacher(images, skip=depth_skip(self.teacher, "super"))
        student = model(images, skip=depth_skip(model, self.depth))
        ce = self.alpha * F.cross_entropy(student, labels, label_smoothing=self.label_smoothing)
        kd = (1 - self.alpha) * top_k_kd_loss(student, teacher, self.temperature, self.top_k)
        backward(ce + kd)
        return TaskOutput({f"ce_{self.depth}": ce, f"kd_{self.depth}": kd}, {self.depth: student.detach()})
