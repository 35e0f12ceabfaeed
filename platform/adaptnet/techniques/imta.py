"""IMTA (Li et al., ICCV 2019): Inline Subnetwork Collaboration heads and One-for-all knowledge distillation.

Paper vs official code (kalviny/IMTA), each a flag whose default is the official behaviour:
  * `isc_detach`: the paper stops the gradient from exit k+1 into exit k's logits; the code does not.
  * `kd_reduction`: the code's `nn.KLDivLoss()` averages over N·C ("official"); textbook KD divides by N
    ("batchmean"), which makes the KD term C times stronger for the same γ.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..models.exits import MultiExitNet, name_exits

KDReduction = Literal["official", "batchmean"]


class ISCHeads(nn.Module):
    """z_1 = W_1 f_1;  z_k = W_k [f_k ; ReLU(BN(V_k z_{k-1}))] for k ≥ 2 (previous logits, not softmax)."""

    def __init__(self, feature_dims: list[int], num_classes: int, isc_detach: bool = False):
        super().__init__()
        self.isc_detach = isc_detach
        self.classifiers = nn.ModuleList(
            [nn.Linear(feature_dims[0], num_classes)]
            + [nn.Linear(2 * dim, num_classes) for dim in feature_dims[1:]]
        )
        self.collaborators = nn.ModuleList(
            nn.Sequential(nn.Linear(num_classes, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True))
            for dim in feature_dims[1:]
        )

    def head(self, k: int, feature: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """Exit k's new logits (0-indexed) from its pooled feature and exit k−1's new logits."""
        if k == 0:
            return self.classifiers[0](feature)
        if self.isc_detach:
            previous = previous.detach()
        return self.classifiers[k](torch.cat([feature, self.collaborators[k - 1](previous)], dim=1))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        logits: list[torch.Tensor] = []
        for k, feature in enumerate(features):
            logits.append(self.head(k, feature, logits[-1] if logits else None))
        return logits


class IMTANet(nn.Module):
    """A multi-exit backbone whose exits are re-read by ISC heads.

    `forward` returns the ISC logits (one per exit); with `return_backbone=True` also the backbone's own
    exit logits, whose last one is the stage-2 teacher. With `freeze_backbone`, the backbone gets no
    gradients; `backbone_bn_train` keeps its BatchNorm in train mode as the official stage 2 does.
    """

    def __init__(self, backbone: MultiExitNet, num_classes: int, isc_detach: bool = False,
                 freeze_backbone: bool = False, backbone_bn_train: bool = True):
        super().__init__()
        self.backbone = backbone
        self.isc = ISCHeads(backbone.feature_dims, num_classes, isc_detach)
        self.freeze_backbone = freeze_backbone
        self.backbone_bn_train = backbone_bn_train
        if freeze_backbone:
            backbone.requires_grad_(False)

    @property
    def num_exits(self) -> int:
        return self.backbone.num_exits

    @property
    def primary_output(self) -> str:
        return self.backbone.primary_output

    def named_logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return name_exits(self(x))

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.freeze_backbone and not self.backbone_bn_train:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor, return_backbone: bool = False):
        backbone_logits, features = self.backbone(x, return_features=True)
        logits = self.isc(features)
        return (logits, backbone_logits) if return_backbone else logits

    def exit_stream(self, x: torch.Tensor):
        """The backbone's early-exit protocol (MultiExitNet.exit_stream) with ISC logits in place of its own."""
        stream = self.backbone.exit_stream(x)
        previous = None
        keep = None
        for k in range(self.num_exits):
            _, feature = stream.send(keep) if k else next(stream)
            if keep is not None and previous is not None:
                previous = previous[keep]
            previous = self.isc.head(k, feature, previous)
            keep = yield previous, feature


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
            reduction: KDReduction = "official") -> torch.Tensor:
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)); the teacher is detached here."""
    log_student = F.log_softmax(student / temperature, dim=1)
    soft_teacher = F.softmax(teacher.detach() / temperature, dim=1)
    kl = F.kl_div(log_student, soft_teacher, reduction="sum")
    denominator = student.numel() if reduction == "official" else student.shape[0]
    return temperature ** 2 * kl / denominator
