"""`adaptnet train CONFIG --dry-run`: everything checked, the dataset inspected (listing and a few image
headers, no decode), nothing written; the plan printed: data and loader, transforms, global / per-worker
batch, steps, the lr schedule in epochs, AMP and the model's per-exit or per-sub-network costs."""
from __future__ import annotations

import math

from ..data.plan import decide, decode_workers
from ..metrics.costs import costs_report
from ..models import model_entry
from .build import build_training
from .config import RunConfig, micro_batch
from .pipeline import stage_configs
from .preflight import check_input_size


def _transforms(cfg: RunConfig, kind: str, loader: str) -> str:
    a = cfg.data.augment
    if kind == "cifar":
        return "train RandomCrop(32, padding 4) + flip; eval none" + (" (batched, memory loader)" if loader == "memory" else "")
    extra = {"none": "", "randaugment": " + RandAugment", "trivialaugment": " + TrivialAugmentWide"}[a.auto_augment]
    erasing = f" + RandomErasing({a.random_erasing})" if a.random_erasing else ""
    repeats = f"; repeated augmentation ×{a.repeated_augment}" if a.repeated_augment > 1 else ""
    return (f"train RandomResizedCrop({a.train_crop}, {a.interpolation}) + flip{extra}{erasing}; "
            f"eval Resize({a.eval_resize}) + CenterCrop({a.eval_crop}){repeats}")


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _schedule(cfg: RunConfig) -> str:
    o, epochs = cfg.optim, cfg.train.epochs
    warmup = f"linear warm-up {o.warmup_epochs:g} epochs from ×{o.warmup_factor:g}, then " if o.warmup_epochs else ""
    if o.schedule == "cosine":
        return f"{o.name} lr {o.lr:g}: {warmup}cosine to 0 over {epochs} epochs"
    drops = ", ".join(str(round(m * epochs)) for m in o.milestones)
    return f"{o.name} lr {o.lr:g}: {warmup}×{o.gamma:g} at epochs {drops}"


def memory_lines(cfg: RunConfig, model, train_size: int, workers: int, gpu_memory_gb: float) -> list[str]:
    """Per-GPU memory of each stage's micro-batch (an estimate from a measured forward), and the
    `train.accumulate_steps` a GPU of `gpu_memory_gb` needs."""
    from ..metrics.memory import HEADROOM, MemoryPlan, gb, saved_bytes_per_image, static_bytes

    lines, per_image = [], saved_bytes_per_image(model, train_size)  # every stage trains this model
    for stage in stage_configs(cfg):
        t = stage.train
        plan = MemoryPlan(per_image, static_bytes(model, stage.optim.name, t.ema), t.amp)
        per_worker = t.batch_size // workers
        micro = per_worker // t.accumulate_steps
        lines.append(f"[{stage.name}] memory per GPU (estimate at {train_size}×{train_size}): {gb(plan.per_image)} of "
                     f"activations per image (measured forward{', ×0.6 under AMP' if t.amp else ''}), weights + "
                     f"gradients + optimizer {gb(plan.static)}; micro-batch {micro} → {gb(plan.at(micro))}")
        needed = plan.accumulation(per_worker, gpu_memory_gb * 1e9)
        where = f"on a {gpu_memory_gb:g} GB GPU"
        if needed is None:
            lines.append(f"  {where}: not even one image a pass fits ({gb(plan.at(1))}); use a larger GPU")
        elif needed <= t.accumulate_steps:
            lines.append(f"  {where}: fits (train.accumulate_steps {t.accumulate_steps}; up to "
                         f"{HEADROOM:.0%} of the GPU)")
        else:
            lines.append(f"  {where}: needs train.accumulate_steps={needed} (micro-batch {per_worker // needed} → "
                         f"{gb(plan.at(per_worker // needed))}); set it, the global batch stays {t.batch_size}")
    return lines


def _decoding(cfg: RunConfig, kind: str, fmt: str) -> str:
    """Where JPEGs are decoded (data.decode) and how tar shards are read, as a run will do it."""
    auto = "by nvjpeg on a CUDA device, else by libjpeg-turbo in the decode processes" if kind == "imagenet" else \
        "by libjpeg-turbo in the decode processes"
    where = {"cpu": "by libjpeg-turbo in the decode processes", "gpu": "by nvjpeg on the GPU (the processes read "
             "bytes)", "auto": auto}[cfg.data.decode]
    shards = ""
    if fmt == "shards":
        shards = ("; training shards streamed whole, shuffle buffer " + str(cfg.data.shuffle_buffer)
                  if cfg.data.shard_reading == "stream" else "; one read per sample")
    return f"JPEGs decoded {where}{shards}"


def plan_lines(cfg: RunConfig, workers: int = 1, on_ray: bool = False, gpu_memory_gb: float | None = None,
               cpus_per_rank: int | None = None) -> list[str]:
    plan = decide(cfg.data, on_ray=on_ray)
    info, loader, kind, side = plan.info, plan.loader, plan.kind, plan.side
    n_train = info.counts["train"]
    if not 0 <= cfg.data.holdout < n_train:
        from .config import ConfigError

        raise ConfigError(f"data.holdout: must be in [0, {n_train}) for {n_train} training images, got {cfg.data.holdout}")
    train_images = min(n_train - cfg.data.holdout, cfg.data.train_subset or n_train)
    lines = [info.summary(), f"held-out: {cfg.data.holdout} training images (seed {cfg.data.holdout_seed}); "
             f"training on {train_images}",
             f"loader: {loader}" + (f" ({decode_workers(cfg.data.workers, cpus_per_rank)} decode processes per rank, "
                                    f"prefetch {cfg.data.prefetch}; {_decoding(cfg, kind, info.format)})"
                                    if loader == "torch" else ""),
             f"transforms ({kind}): {_transforms(cfg, kind, loader)}; normalization {cfg.data.normalization}"]
    for stage in stage_configs(cfg):
        t = stage.train
        micro = micro_batch(stage, workers)
        per_rank = math.ceil(train_images / workers)
        steps = math.ceil(math.ceil(per_rank / micro) / t.accumulate_steps)
        amp = f"on ({t.amp_dtype}, CUDA only)" if t.amp else "off (fp32)"
        lines += [f"[{stage.name}] {stage.technique}, {stage.model.name}: {t.epochs} epochs",
                  f"  batch: global {t.batch_size} = {workers} workers × {t.batch_size // workers}"
                  + (f" ({t.accumulate_steps} micro-batches of {micro})" if t.accumulate_steps > 1 else ""),
                  f"  steps: {steps} per epoch, {steps * t.epochs} in total",
                  "  evaluation: held-out split every epoch, test split "
                  + ("every epoch" if t.test_every == 1 else f"every {t.test_every} epochs and at the last"),
                  f"  schedule: {_schedule(stage)}; weight decay {stage.optim.weight_decay:g}", f"  AMP: {amp}",
                  f"  GPU: cudnn.benchmark {_on(t.cudnn_benchmark)}, TF32 {_on(t.tf32)}, channels_last "
                  f"{_on(t.channels_last)}, compile {_on(t.compile)}"]
    size = check_input_size(cfg, plan)  # the model runs on these images (one line naming the field if not)
    model, _ = build_training(stage_configs(cfg)[0], len(info.classes) or model_entry(cfg.model.name).num_classes,
                              load_pretrained=False)
    report = costs_report(cfg.model.name, model, size, model_entry(cfg.model.name).cost_convention)
    rows = report.get("exits") or report["configs"]
    key = "exit" if "exits" in report else "skip"
    lines.append(f"costs at {size}×{size} (MMACs): " + ", ".join(f"{r[key]} {r['macs'] / 1e6:.1f}" for r in rows))
    if gpu_memory_gb:
        lines += memory_lines(cfg, model, side if kind == "cifar" else cfg.data.augment.train_crop, workers, gpu_memory_gb)
    return lines
