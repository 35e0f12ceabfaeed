"""Run configs: YAML files (or shipped presets) validated by pydantic before anything runs.

Any problem becomes a `ConfigError` whose message is one line naming the field, e.g.
`optim.lr: Input should be greater than 0 (got -1)`.
"""
from __future__ import annotations

import functools
import inspect
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

import torch
import yaml
from pydantic import (BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt, ValidationError,
                      field_validator)

from ..data.resolve import resolve_dataset_spec
from ..messages import one_line, shown
from ..models import MultiExitNet, SkippableDepthNet, check_model_args, create_model, list_models, model_entry

MAX_CONFIG_BYTES = 1 << 20


class _NoAliases(yaml.SafeLoader):
    """YAML without anchors and aliases: a config has no use for them, and a few nested aliases expand into
    gigabytes (a "billion laughs")."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("aliases (*name) are not accepted in configs")
        return super().compose_node(parent, index)


def parse_yaml(text: str):
    if len(text) > MAX_CONFIG_BYTES:
        raise yaml.YAMLError(f"larger than {MAX_CONFIG_BYTES} bytes")
    return yaml.load(text, Loader=_NoAliases)


class ConfigError(ValueError):
    """An invalid run config; str() is one line that names the field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)  # finite floats only


class ModelConfig(Strict):
    name: str = "msdnet_cifar_anytime"
    args: dict[str, Any] = Field(default_factory=dict, description="constructor overrides, e.g. he_init: true")
    ge_scope: Literal["coarsest", "all"] | None = Field(
        None, description="Gradient Equilibrium: coarsest (official code), all (every scale), or off")

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in list_models():
            raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}")
        return name


class AugmentConfig(Strict):
    """Per-image transforms of the streaming loaders (data/transforms.py); defaults: the ImageNet reference."""

    train_crop: PositiveInt = Field(224, description="RandomResizedCrop size (ADN v2 recipe: 176)")
    eval_resize: PositiveInt = Field(256, description="evaluation Resize (ADN v2 recipe: 232)")
    eval_crop: PositiveInt = Field(224, description="evaluation CenterCrop")
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    auto_augment: Literal["none", "randaugment", "trivialaugment"] = "none"
    random_erasing: float = Field(0.0, ge=0, le=1, description="RandomErasing probability (0: off)")
    repeated_augment: PositiveInt = Field(1, description="repeated-augmentation sampler: each image k times per "
                                          "epoch across ranks (ViT/Swin/v2 recipes: 4)")

    @field_validator("eval_crop")
    @classmethod
    def _crop_fits(cls, crop: int, info) -> int:
        resize = info.data.get("eval_resize")
        if resize is not None and crop > resize:
            raise ValueError(f"must not exceed data.augment.eval_resize ({resize}), got {crop}")
        return crop


class DataConfig(Strict):
    dataset: str = Field(description="cifar10 | cifar100 | ImageFolder folder or .tar(.gz) | folder of shards "
                         "with index.json; local or s3://")
    loader: Literal["auto", "memory", "torch", "ray"] = Field(
        "auto", description="memory: decoded-tensor cache (small same-size sets); torch: streaming DataLoader; "
        "ray: streaming Ray Data (runs on Ray); auto: memory for small same-size sets, else torch (ray on Ray)")
    transform: Literal["auto", "cifar", "imagenet"] = Field(
        "auto", description="cifar: pad-4 crop + flip; imagenet: RandomResizedCrop + flip, Resize + CenterCrop; "
        "auto: cifar for 32×32 images, else imagenet")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    workers: int | None = Field(None, ge=0, description="streaming decode processes per rank (torch loader; 0: "
                                "in-process); None: the rank's CPUs less one for training, at most 16")
    prefetch: PositiveInt = Field(2, description="batches each decode process prepares ahead")
    shard_reading: Literal["stream", "random"] = Field(
        "stream", description="tar shards' training split (torch loader): stream: each rank reads whole shards front "
        "to back in a seeded per-epoch shard order, mixed by a seeded shuffle buffer (one GET per shard on S3); "
        "random: one read (ranged GET) per sample, in the DataLoader twin's global order (as Ray Data reads them)")
    shuffle_buffer: PositiveInt = Field(1000, description="samples each decode process mixes when streaming shards")
    decode: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="where streamed JPEGs are decoded (torch loader): cpu: libjpeg-turbo in the decode "
        "processes; gpu: nvjpeg in the training process, crops on the GPU (the processes only read bytes; needs "
        "CUDA); auto: gpu for ImageNet-style transforms on a CUDA device, else cpu")
    bad_images: Literal["skip", "fail"] = Field(
        "skip", description="an undecodable image in a streaming run: skip it (counted, one stderr line) or fail")
    memory_limit_gb: float = Field(8.0, gt=0, description="auto picks memory only below this decoded size")
    cache_dir: str | None = None
    holdout: int = Field(5000, ge=0, description="training images held out for model selection and thresholds")
    holdout_seed: int = 0
    holdout_transform: Literal["test", "train"] = Field(
        "test", description="'train' reproduces the official code, which augments the held-out images")
    train_subset: PositiveInt | None = Field(None, description="use only this many training images (smoke runs)")
    test_subset: PositiveInt | None = None
    normalization: Literal["auto", "cifar10", "cifar100", "imagenet", "computed"] = "auto"
    split_from: str | None = Field(None, description="a checkpoint whose train/held-out split this run reuses")


class OptimConfig(Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: NonNegativeFloat = 1e-4
    norm_bias_weight_decay: NonNegativeFloat | None = Field(
        None, description="weight decay of norm weights and biases (1-d parameters); default: weight_decay")
    embedding_weight_decay: NonNegativeFloat | None = Field(
        None, description="weight decay of the class token, position embedding and relative position bias table "
        "(the reference's --transformer-embedding-decay); default: as the other parameters")
    warmup_epochs: float = Field(0, ge=0, description="linear warm-up from warmup_factor·lr")
    warmup_factor: float = Field(0.01, gt=0, le=1)
    schedule: Literal["multistep", "cosine"] = "multistep"
    milestones: list[float] = Field([0.5, 0.75], description="multistep drops, as fractions of the epochs")
    gamma: float = Field(0.1, gt=0, le=1)
    min_lr: NonNegativeFloat = Field(0.0, description="cosine: the learning rate it ends at (eta_min)")
    lr_step: Literal["iteration", "epoch"] = Field(
        "iteration", description="iteration (default; MSDNet's official cosine): warm-up and schedule move every "
        "step; epoch: once per epoch, LinearLR then CosineAnnealingLR/MultiStepLR as the torchvision reference")

    @field_validator("lr_step")
    @classmethod
    def _whole_warmup(cls, lr_step: str, info) -> str:
        warmup = info.data.get("warmup_epochs", 0)
        if lr_step == "epoch" and warmup != int(warmup):
            raise ValueError(f"'epoch' needs a whole number of warm-up epochs, got optim.warmup_epochs={warmup}")
        return lr_step

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, milestones: list[float]) -> list[float]:
        if any(not 0 < m < 1 for m in milestones) or milestones != sorted(milestones):
            raise ValueError(f"must be increasing fractions in (0, 1), got {milestones}")
        return milestones


class TrainConfig(Strict):
    epochs: PositiveInt
    batch_size: PositiveInt = Field(64, description="GLOBAL batch per optimizer step, as the papers state it; "
                                    "each of W workers takes batch_size / W")
    accumulate_steps: PositiveInt = Field(1, description="micro-batches per optimizer step (per-worker batch / "
                                          "accumulate_steps at a time); the lr is used as written")
    eval_batch_size: PositiveInt = Field(500, description="per process")
    test_every: PositiveInt = Field(1, description="evaluate the test split every this many epochs and at the last "
                                    "(the held-out split, which selects the model, every epoch)")
    exit_weights: Union[Literal["equal", "linear"], list[NonNegativeFloat]] = Field(
        "equal", description="equal (the papers' baseline), linear (k/K), or one weight per exit")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(False, description="mixed precision when on CUDA (ignored on CPU); presets state it: "
                      "MSDNet/IMTA official runs are fp32, ADN per its recipe table")
    amp_dtype: Literal["float16", "bfloat16"] = Field(
        "float16", description="float16 uses a GradScaler across all backward passes of a step; bfloat16 needs none "
        "(a GPU without bfloat16, e.g. V100 or T4, falls back to float16 with one line)")
    channels_last: bool = Field(False, description="NHWC memory format for model and batches (faster convs on GPUs)")
    tf32: bool = Field(True, description="TF32 for float32 matmuls and convolutions on Ampere and newer GPUs; presets "
                       "that reproduce the official fp32 runs turn it off")
    cudnn_benchmark: bool = Field(True, description="cuDNN picks the fastest convolution algorithms for the "
                                  "run's fixed shapes (CUDA only)")
    compile: bool = Field(False, description="torch.compile the trained model (bench/step.py: when it pays; "
                          "checkpoints and evaluation use the plain module)")
    threads: PositiveInt | None = Field(None, description="torch CPU threads (default: torch's choice)")
    progress: bool = True
    resume: bool = Field(True, description="continue from the run's last checkpoint when there is one")
    mixup_alpha: NonNegativeFloat = Field(0.0, description="MixUp Beta(α, α) on each batch (0: off); soft targets")
    cutmix_alpha: NonNegativeFloat = Field(0.0, description="CutMix Beta(α, α) (0: off); with MixUp, one of the two "
                                           "is picked per batch")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the CE terms (never of KD)")
    clip_grad_norm: PositiveFloat | None = Field(None, description="clip the total gradient norm of each step "
                                                 "(after all backward passes and AMP unscaling); None: off")
    ema: bool = Field(False, description="evaluate, select and save an EMA of the weights (torchvision reference)")
    ema_decay: float = Field(0.99998, gt=0, lt=1, description="nominal EMA decay; 1 − decay is rescaled by "
                             "global batch · ema_steps / epochs")
    ema_steps: PositiveInt = Field(32, description="update the EMA every this many optimizer steps")

    @field_validator("exit_weights")
    @classmethod
    def _not_all_zero(cls, weights):
        if isinstance(weights, list) and (not weights or sum(weights) == 0):
            raise ValueError("custom exit weights must not be empty or all zero")
        return weights


class IMTAConfig(Strict):
    """IMTA stage 2 / joint options; defaults are the official code's (brief §3–§5)."""

    isc_detach: bool = Field(False, description="stop exit k+1's gradient into exit k (paper); code: no")
    temperature: float = Field(3.0, gt=0)
    gamma: float = Field(0.9, ge=0, le=1, description="KD weight on exits 1..K-1")
    kd_reduction: Literal["official", "batchmean"] = Field(
        "official", description="official: KLDivLoss mean over N·C; batchmean: textbook KD (×C stronger)")
    freeze_backbone: bool = True
    backbone_bn_train: bool = Field(True, description="frozen backbone's BN in train mode, as the official code")
    stage1_checkpoint: str | None = Field(None, description="imta_stage2: the stage-1 (GE) checkpoint")
    stage2_epochs: PositiveInt | None = Field(None, description="imta_two_stage: stage-2 epochs (default: train.epochs)")


class ADNConfig(Strict):
    """ADN self-distillation (brief §2.1); defaults are the NeurIPS release's."""

    alpha: float = Field(0.5, ge=0, le=1, description="α·CE(super) + (1−α)·T²·KL(super ‖ student)")
    temperature: float = Field(1.0, gt=0)
    top_k: PositiveInt | None = Field(None, description="KD over the teacher's top-K classes (release: 500); "
                                      "None or K ≥ classes: all classes")
    student: Literal["base", "random"] = Field("base", description="ablation: a random sub-network as student")
    student_loss: Literal["kd", "ce"] = Field("kd", description="ablation: CE on the student instead of KD")
    depth: Literal["super", "base"] = Field("super", description="single_depth / depth_kd: the one sub-network "
                                            "trained (super: every block; base: the mandatory blocks only)")
    teacher_checkpoint: str | None = Field(None, description="depth_kd: the trained (single_depth super) teacher")


def safe_name(name: str) -> str:
    """A run or sweep name is one safe path component: letters, digits, `_.-`, not `.` or `..`."""
    if not SAFE_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError("must be one path component of letters, digits and _.- (not . or ..), at most 128 characters")
    return name


SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


class RunConfig(Strict):
    name: str = Field(description="the run directory's name under output_dir (one safe path component)")
    output_dir: str = "runs"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig
    technique: Literal["multi_exit", "imta_two_stage", "imta_stage2", "imta_joint", "adn_distill", "single_depth",
                       "depth_kd", "adn_kd_individual"] = Field(
        "multi_exit", description="multi_exit: Σ w_k CE (with model.ge_scope for GE); imta_two_stage: GE stage 1 "
        "then ISC + KD on the frozen backbone; imta_stage2: stage 2 alone; imta_joint: one stage, live teacher; "
        "adn_distill: super→base self-distillation of an adaptive-depth model; single_depth: one depth (adn.depth) "
        "trained alone; depth_kd: one depth distilled from adn.teacher_checkpoint; adn_kd_individual: single_depth "
        "super, then the base depth distilled from it (the paper's KD individual)")
    imta: IMTAConfig = Field(default_factory=IMTAConfig)
    adn: ADNConfig = Field(default_factory=ADNConfig)

    @field_validator("name")
    @classmethod
    def _safe(cls, name: str) -> str:
        return safe_name(name)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    got = first.get("input")
    quoted = "" if first["type"] in ("missing",) or isinstance(got, dict) else f" (got {shown(got)})"
    return f"{where}: {first['msg'].removeprefix('Value error, ')}{quoted}" + (f" [+{err.error_count() - 1} more]" if err.error_count() > 1 else "")


OVERRIDE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {part} is not a section")
    node[leaf] = value


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("adaptnet.configs").iterdir() if p.name.endswith(".yaml"))


def read_yaml(path_or_preset: str) -> dict:
    path = Path(path_or_preset)
    if path.is_file():
        text = path.read_text()
    elif path_or_preset in preset_names():
        text = resources.files("adaptnet.configs").joinpath(f"{path_or_preset}.yaml").read_text()
    else:
        raise ConfigError(f"config: {path_or_preset!r} is neither a file nor a preset ({', '.join(preset_names())})")
    try:
        tree = parse_yaml(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config: {path_or_preset} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config: {path_or_preset} must be a mapping at the top level")
    return tree


def build_config(tree: dict, overrides: list[str] = ()) -> RunConfig:
    """Validates a config tree after applying `section.key=value` overrides (values parsed as YAML)."""
    tree = yaml.safe_load(yaml.safe_dump(tree))  # deep copy
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not OVERRIDE_KEY.fullmatch(key):
            raise ConfigError(f"override {item!r}: expected section.key=value")
        try:
            parsed = parse_yaml(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"{key}: {shown(value)} is not a valid YAML value (quote strings, close brackets; "
                              f"{one_line(err, 80)})") from None
        _set_dotted(tree, key, parsed)
    try:
        cfg = RunConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_one_line(err)) from None
    check_against_model(cfg)
    cfg.data.dataset = resolve_dataset_spec(cfg.data.dataset)  # cifar10 → its offline mirror when there is one
    return cfg


def load_config(path_or_preset: str, overrides: list[str] = ()) -> RunConfig:
    return build_config(read_yaml(path_or_preset), overrides)


DEPTH_TECHNIQUES = ("adn_distill", "single_depth", "depth_kd", "adn_kd_individual")  # adaptive-depth models only


def check_against_model(cfg: RunConfig) -> None:
    """Checks what needs the model: its constructor arguments and the exit count (built on 'meta', free)."""
    entry = model_entry(cfg.model.name)
    accepted = inspect.signature(entry.builder).parameters
    for key in cfg.model.args:
        if key not in accepted or key in ("num_classes", "ge_scope"):
            raise ConfigError(f"model.args.{key}: not an argument of {cfg.model.name}")
    if cfg.model.ge_scope and "ge_scope" not in accepted:
        raise ConfigError(f"model.ge_scope: {cfg.model.name} has no exits to equalise")
    try:
        check_model_args(cfg.model.name, cfg.model.args)  # declared ranges first: nothing huge gets built
        kind, num_exits = _model_facts(cfg.model.name, cfg.model.ge_scope,
                                       json.dumps(cfg.model.args, sort_keys=True, default=str))
    except (TypeError, ValueError) as err:
        named = str(err).partition(":")[0]
        raise ConfigError(f"model.args.{err}" if named in cfg.model.args else f"model.args: {err}") from None
    if cfg.technique == "imta_stage2" and not cfg.imta.stage1_checkpoint:
        raise ConfigError("imta.stage1_checkpoint: required when technique is imta_stage2")
    if cfg.technique == "depth_kd" and not cfg.adn.teacher_checkpoint:
        raise ConfigError("adn.teacher_checkpoint: required when technique is depth_kd")
    family = SkippableDepthNet if cfg.technique in DEPTH_TECHNIQUES else MultiExitNet
    if not issubclass(kind, family):
        raise ConfigError(f"technique: {cfg.technique} needs a {family.__name__} model, {cfg.model.name} is not one")
    weights = cfg.train.exit_weights
    if isinstance(weights, list) and len(weights) != num_exits:
        raise ConfigError(f"train.exit_weights: {cfg.model.name} has {num_exits} exits, got {len(weights)} weights")


@functools.lru_cache(maxsize=64)
def _model_facts(name: str, ge_scope: str | None, args: str) -> tuple[type, int | None]:
    """The class and exit count of a model, built once per (name, GE scope, args as JSON) on 'meta': a sweep
    checks the same model for every trial's config (building them was 47 % of the paper-preset dry runs' time)."""
    with torch.device("meta"):
        model = create_model(name, **({"ge_scope": ge_scope} if ge_scope else {}), **json.loads(args))
    return type(model), getattr(model, "num_exits", None)


def micro_batch(cfg: RunConfig, world_size: int) -> int:
    """Images one worker takes per forward pass: global batch / workers / accumulation steps, exactly."""
    t = cfg.train
    if t.batch_size % world_size:
        raise ConfigError(f"train.batch_size: the global batch {t.batch_size} does not divide over {world_size} workers")
    per_worker = t.batch_size // world_size
    if per_worker % t.accumulate_steps:
        raise ConfigError(f"train.accumulate_steps: {t.accumulate_steps} does not divide the per-worker batch "
                          f"{per_worker} (train.batch_size {t.batch_size} / {world_size} workers)")
    return per_worker // t.accumulate_steps
