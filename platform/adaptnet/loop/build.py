"""Config → (model, task): the one place that maps a technique name to its parts."""
from __future__ import annotations

from torch import nn

from ..models import create_model
from ..techniques import DepthKD, IMTANet, MultiExitCE, OneForAllKD, SingleDepthCE, SuperBaseDistillation, Task
from .checkpoint import load_checkpoint
from .config import RunConfig
from .ema import eval_weights


def build_backbone(cfg: RunConfig, num_classes: int) -> nn.Module:
    ge = {"ge_scope": cfg.model.ge_scope} if cfg.model.ge_scope else {}  # only multi-exit nets take it
    return create_model(cfg.model.name, num_classes, **ge, **cfg.model.args)


def _imta_net(cfg: RunConfig, num_classes: int, frozen: bool) -> IMTANet:
    return IMTANet(build_backbone(cfg, num_classes), num_classes, isc_detach=cfg.imta.isc_detach,
                   freeze_backbone=frozen, backbone_bn_train=cfg.imta.backbone_bn_train)


def _kd(cfg: RunConfig, teacher: str) -> OneForAllKD:
    return OneForAllKD(cfg.imta.temperature, cfg.imta.gamma, cfg.imta.kd_reduction, teacher, cfg.train.label_smoothing)


def build_training(cfg: RunConfig, num_classes: int, load_pretrained: bool = True,
                   load_teacher: bool = False) -> tuple[nn.Module, Task]:
    """The model to train and its task. `load_pretrained=False` skips loading a stage-1 checkpoint
    (when a full checkpoint of this run will be loaded on top anyway). `load_teacher`: a depth_kd task gets its
    trained teacher (training needs it, resumed or not; plans and evaluations only build the network)."""
    if cfg.technique == "multi_exit":
        model = build_backbone(cfg, num_classes)
        return model, MultiExitCE(cfg.train.exit_weights, model.num_exits, cfg.train.label_smoothing)
    if cfg.technique == "adn_distill":
        a = cfg.adn
        return build_backbone(cfg, num_classes), SuperBaseDistillation(a.alpha, a.temperature, a.top_k, a.student,
                                                                       a.student_loss, cfg.train.label_smoothing)
    if cfg.technique == "single_depth":
        return build_backbone(cfg, num_classes), SingleDepthCE(cfg.adn.depth, cfg.train.label_smoothing)
    if cfg.technique == "depth_kd":
        student, teacher = build_backbone(cfg, num_classes), build_backbone(cfg, num_classes)  # student first: the
        if load_teacher:                                     # same initial weights as a single_depth run's
            teacher.load_state_dict(eval_weights(load_checkpoint(cfg.adn.teacher_checkpoint)))
        a = cfg.adn
        return student, DepthKD(teacher, a.depth, a.alpha, a.temperature, a.top_k, cfg.train.label_smoothing)
    if cfg.technique == "imta_joint":
        return _imta_net(cfg, num_classes, frozen=False), _kd(cfg, "live")
    if cfg.technique == "imta_stage2":
        model = _imta_net(cfg, num_classes, frozen=cfg.imta.freeze_backbone)
        if load_pretrained:
            stage1 = load_checkpoint(cfg.imta.stage1_checkpoint)
            model.backbone.load_state_dict(eval_weights(stage1))  # the weights stage 1 was selected with
        return model, _kd(cfg, "stage1")
    raise ValueError(f"technique: {cfg.technique!r} is a pipeline, not a single training run")
