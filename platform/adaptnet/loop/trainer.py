"""The framework-free training loop. Ray Train workers call `fit` too, passing a `Distributed` and callbacks."""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn
from tqdm import tqdm

from ..data import Prepared, prepare_data
from ..metrics.costs import costs_report
from ..models import model_entry
from ..techniques.tasks import without_sync
from .build import build_training
from .checkpoint import load_checkpoint, restore_scaler, save_checkpoint
from .config import RunConfig, micro_batch
from .ema import build_ema
from .recipe import BatchMix, clip_gradients, hard_labels
from .schedule import epoch_scheduler

LOG_EVERY = 50  # steps between progress-bar updates: the only host syncs inside an epoch


@dataclass
class Distributed:
    """How the loop runs among several processes; the defaults are a single process."""

    rank: int = 0
    world_size: int = 1
    wrap_model: Callable[[nn.Module, bool], nn.Module] = lambda model, find_unused_parameters: model
    all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] = lambda tensor: tensor
    share_buffers: Callable[[nn.Module], None] = lambda module: None  # rank 0's buffers to every rank
    broadcast_object: Callable[[Any], Any] = lambda obj: obj  # rank 0's (picklable) object to every rank
    resume_state: Callable[[RunConfig], dict | None] = lambda cfg: local_resume_state(cfg)
    device: torch.device | None = None  # None: from train.device; Ray gives each worker its own GPU
    make_data: Callable[..., Prepared] | None = None  # None: prepare_data; Ray Data runs bring their own

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class Callback(Protocol):
    def on_epoch_end(self, epoch: int, metrics: dict[str, float], checkpoint_path: Path | None) -> None: ...


@dataclass
class FitResult:
    run_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)   # the last epoch's
    history: list[dict[str, float]] = field(default_factory=list)


def gpu_settings(train, device: torch.device) -> torch.dtype:
    """The run's GPU switches (cuDNN autotuning, TF32) on CUDA; returns the AMP dtype this device can run."""
    dtype = getattr(torch, train.amp_dtype)
    if device.type != "cuda":
        return dtype
    torch.backends.cudnn.benchmark = train.cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = train.tf32
    if dtype == torch.bfloat16 and train.amp and not torch.cuda.is_bf16_supported():
        print("train.amp_dtype: this GPU has no bfloat16; float16 with a GradScaler instead", file=sys.stderr)
        return torch.float16
    return dtype


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device: cuda was asked for but no CUDA device is visible")
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu")


# Parameter names of `optim.embedding_weight_decay`: the reference's keys, plus ViT's `pos_embedding` (the
# reference's "position_embedding" never matches torchvision's ViT, whose recipe leaves the option unset).
EMBEDDINGS = ("class_token", "pos_embedding", "position_embedding", "relative_position_bias_table")


def build_optimizer(cfg: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW over the trainable parameters; norm weights and biases, and transformer embeddings (class
    token, position embedding, relative position bias table), may get their own weight decay."""
    o = cfg.optim
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    embedding = {id(p) for n, p in named if o.embedding_weight_decay is not None and n.rsplit(".", 1)[-1] in EMBEDDINGS}
    trainable = [p for _, p in named if id(p) not in embedding]
    flat_decay = o.weight_decay if o.norm_bias_weight_decay is None else o.norm_bias_weight_decay
    groups = [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": o.weight_decay},
              {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": flat_decay},
              {"params": [p for _, p in named if id(p) in embedding], "weight_decay": o.embedding_weight_decay}]
    groups = [g for g in groups if g["params"]]
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)


def lr_factor(cfg: RunConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then multistep drops at whole epochs (as the reference) or a per-iteration cosine."""
    epochs, o = cfg.train.epochs, cfg.optim
    warmup_steps = o.warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return o.warmup_factor + (1 - o.warmup_factor) * step / warmup_steps
    if o.schedule == "cosine":
        floor = o.min_lr / o.lr
        progress = (step - warmup_steps) / (epochs * steps_per_epoch - warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    epoch = step // steps_per_epoch
    drops = sum(epoch >= round(m * epochs) for m in o.milestones)
    return o.gamma ** drops


@torch.no_grad()
def evaluate(model: nn.Module, batches, outputs: Callable[[torch.Tensor], dict] | None = None,
             all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
    """Top-1/top-5 accuracy (%) and cross-entropy of each named output, e.g. `top1_exit3` or `top1_base`,
    over one pass of `batches`. `outputs(images)` gives the named logits (default: `model.named_logits`).
    With `all_reduce_sum`, `batches` is this rank's shard of the split: counts and sums are added over the ranks
    (one all-reduce), so every rank returns the whole split's metrics."""
    was_training = model.training
    model.eval()
    outputs = outputs or model.named_logits
    sums: dict[str, torch.Tensor] = {}
    n = 0
    with torch.no_grad():
        for images, labels in batches:
            for name, logits in outputs(images).items():
                logits = logits.float()
                top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(labels[:, None])
                row = torch.stack([top5[:, 0].sum(), top5.any(1).sum(),
                                   torch.nn.functional.cross_entropy(logits, labels, reduction="sum")]).double()
                sums[name] = sums.get(name, 0) + row  # on the device: no host sync per batch
            n += len(labels)
    model.train(was_training)
    local = torch.cat([torch.stack(list(sums.values())).flatten(), torch.tensor([float(n)], dtype=torch.float64,
                                                                                   device=next(iter(sums.values())).device)])
    totals = (all_reduce_sum(local) if all_reduce_sum else local).tolist()
    n = totals[-1]
    metrics = {}
    for k, name in enumerate(sums):
        top1, top5, loss = totals[3 * k: 3 * k + 3]
        metrics.update({f"top1_{name}": 100 * top1 / n, f"top5_{name}": 100 * top5 / n, f"loss_{name}": loss / n})
    return metrics


def epoch_line(metrics: dict[str, float]) -> str:
    """`epoch 3 | loss 4.21 | test top1 exit1 41.2 … | 812 img/s | lr 0.1`: the key numbers on one line."""
    tops = " ".join(f"{k.split('top1_', 1)[1]} {v:.1f}" for k, v in metrics.items() if k.startswith("test/top1_"))
    return (f"epoch {int(metrics['epoch'])} | loss {metrics['train/loss']:.3f} | test top1 {tops or '-'} | "
            f"{metrics['train/images_per_s']:.0f} img/s | lr {metrics['lr']:.4g}")


def checkpoint_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.pt"


def local_resume_state(cfg: RunConfig) -> dict | None:
    """The run directory's last checkpoint, when resuming is on and there is one."""
    path = checkpoint_path(cfg.run_dir)
    return load_checkpoint(path) if cfg.train.resume and path.exists() else None


def fit(cfg: RunConfig, callbacks: list[Callback] = (), dist: Distributed | None = None) -> FitResult:
    dist = dist or Distributed()
    run_dir = cfg.run_dir
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = dist.device or pick_device(cfg.train.device)
    use_amp = cfg.train.amp and device.type == "cuda"
    amp_dtype = gpu_settings(cfg.train, device)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    ckpt_file = checkpoint_path(run_dir)
    resume = dist.resume_state(cfg)

    # Data: the held-out split is fixed once (or taken from an earlier stage) and reused on resume.
    # train.batch_size is the global batch: each rank takes its share, in accumulate_steps micro-batches.
    accumulate = cfg.train.accumulate_steps
    data: Prepared = (dist.make_data or prepare_data)(
        cfg.data, micro_batch(cfg, dist.world_size), cfg.train.eval_batch_size, cfg.train.seed,
        saved_split=resume["split"] if resume else _split_from(cfg), rank=dist.rank, world_size=dist.world_size,
        device=device)

    # Model, task, optimizer (trainable parameters only), schedule.
    torch.manual_seed(cfg.train.seed)
    model, task = build_training(cfg, data.num_classes, load_pretrained=resume is None, load_teacher=True)
    model = model.to(device, memory_format=memory_format)
    optimizer = build_optimizer(cfg, model)
    steps_per_epoch = math.ceil(len(data.train) / accumulate)  # optimizer steps
    per_epoch = cfg.optim.lr_step == "epoch"
    scheduler = epoch_scheduler(cfg, optimizer) if per_epoch else \
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step, steps_per_epoch))
    mix = BatchMix.from_config(cfg, data.num_classes)
    ema = build_ema(cfg, model, global_batch=cfg.train.batch_size)  # train.batch_size is the global batch
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)
    start_epoch = 0
    if resume:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        restore_scaler(scaler, resume.get("scaler"))
        if ema:
            ema.load_state_dict(resume.get("model_ema"))
        start_epoch = resume["epoch"] + 1
    trained = dist.wrap_model(model, task.find_unused_parameters)
    if cfg.train.compile:  # the same parameters; checkpoints and evaluation keep using `model`
        trained = torch.compile(trained)

    def backward(loss: torch.Tensor) -> None:
        with torch.autocast(device.type, enabled=False):  # backward reuses the forward's autocast dtypes
            scaler.scale(loss / accumulate if accumulate > 1 else loss).backward()

    history = []
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
        torch.save(data.split, run_dir / "split.pt")
        history = _read_history(run_dir, start_epoch)
        _write_costs(model, cfg, data, run_dir)

    for epoch in range(start_epoch, cfg.train.epochs):
        data.train.set_epoch(epoch)
        trained.train()
        # Sums stay on the device (no host sync per step); they are all-reduced once at the epoch's end.
        sums: dict[str, torch.Tensor] = {}
        correct: dict[str, torch.Tensor] = {}
        seen = steps = 0
        started = time.perf_counter()
        bar = tqdm(data.train, desc=f"{cfg.name} epoch {epoch + 1}/{cfg.train.epochs}", leave=False,
                   disable=None if cfg.train.progress and dist.is_main else True)  # None: off when not a TTY
        optimizer.zero_grad(set_to_none=True)
        for step, (images, labels) in enumerate(bar):
            images, labels = mix(images, labels, epoch)  # MixUp/CutMix: one mixed batch for all passes, soft targets
            steps_now = (step + 1) % accumulate == 0 or step + 1 == len(data.train)  # the cycle's last micro-batch
            # Earlier micro-batches keep their gradients local: one all-reduce per optimizer step under DDP.
            with contextlib.nullcontext() if steps_now else without_sync(trained), \
                    torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                out = task(trained, images.contiguous(memory_format=memory_format), labels, backward)
            if steps_now:
                clip_gradients(trained, optimizer, scaler, cfg.train.clip_grad_norm)
                scaler.step(optimizer)  # one step after all of the task's backward passes (and micro-batches)
                scaler.update()
                if ema:
                    ema.after_step(model, epoch)
                if not per_epoch:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                steps += 1

            n = len(labels)
            seen += n
            for name, value in out.losses.items():
                sums[name] = sums.get(name, 0) + value.detach().double() * n
            for name, logits in out.outputs.items():
                correct[name] = correct.get(name, 0) + (logits.argmax(1) == hard_labels(labels)).sum()
            if not bar.disable and step % LOG_EVERY == 0:
                bar.set_postfix(loss=f"{sum(float(v.detach()) for v in out.losses.values()):.3f}")

        if per_epoch:
            scheduler.step()
        # Per-exit train metrics, summed over ranks.
        local = torch.cat([torch.stack(list(sums.values())).double(), torch.stack(list(correct.values())).double(),
                           torch.tensor([seen], dtype=torch.float64, device=device)])
        totals = dist.all_reduce_sum(local).tolist()
        n_total = totals[-1]
        elapsed = time.perf_counter() - started
        metrics = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "epoch_time_s": elapsed,
                   "start_epoch": start_epoch,  # > 0: this process resumed from a checkpoint
                   "train/samples": n_total, "train/steps": steps, "train/images_per_s": n_total / elapsed}
        metrics.update({f"train/{name}": v / n_total for name, v in zip(sums, totals)})
        metrics["train/loss"] = sum(totals[: len(sums)]) / n_total
        metrics.update({f"train/top1_{name}": 100 * c / n_total for name, c in zip(correct, totals[len(sums):])})
        if getattr(data.train, "skipped", 0):
            metrics["data/skipped_images"] = data.train.skipped
        # Held-out evaluation every epoch (it selects the model), the test split every train.test_every epochs and at
        # the last; each rank evaluates its shard of the split, the sums added over ranks.
        test_now = (epoch + 1) % cfg.train.test_every == 0 or epoch + 1 == cfg.train.epochs
        for split_name, batches in (("holdout", data.holdout), ("test", data.test if test_now else None)):
            if batches is None:
                continue
            evaluated = ema.module if ema else model  # the EMA weights are evaluated, selected and saved
            dist.share_buffers(evaluated)  # every rank evaluates the weights and statistics rank 0 saves
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                found = evaluate(evaluated, batches, all_reduce_sum=dist.all_reduce_sum)
            metrics.update({f"{split_name}/{key}": v for key, v in found.items()})
        saved = None
        if dist.is_main:
            # One line per epoch (stdout, not print(): Ray Train V2 reroutes print into its logger).
            sys.stdout.write(f"[{cfg.name}] {epoch_line(metrics)}\n")
            sys.stdout.flush()
            saved = _save_checkpoint(ckpt_file, model, optimizer, scheduler, scaler, epoch, cfg, data.split,
                                     {"model_ema": ema.state_dict()} if ema else {})
            history.append(metrics)
            _keep_best(run_dir, saved, metrics, history, selection_metric(model))
            with open(run_dir / "metrics.jsonl", "a") as log:
                log.write(json.dumps(metrics) + "\n")
        for callback in callbacks:
            callback.on_epoch_end(epoch, metrics, saved)
    return FitResult(run_dir, history[-1] if history else {}, history)


def _split_from(cfg: RunConfig) -> dict | None:
    return load_checkpoint(cfg.data.split_from)["split"] if cfg.data.split_from else None


def selection_metric(model: nn.Module) -> str:
    """Model selection on the held-out split (never on the test set, unlike the IMTA scripts): the last exit
    of a multi-exit net, the super-net of an adaptive-depth one."""
    return f"holdout/top1_{model.primary_output}"


def best_checkpoint(run_dir: Path) -> Path:
    """The held-out-best checkpoint when there is one, else the last."""
    best = run_dir / "checkpoints" / "best.pt"
    return best if best.exists() else checkpoint_path(run_dir)


def selected_checkpoint(cfg: RunConfig) -> Path:
    """Where the checkpoint a later stage should start from will be, known before the run: the held-out
    best (written every epoch it improves) when there is a held-out split, else the last."""
    return cfg.run_dir / "checkpoints" / "best.pt" if cfg.data.holdout else checkpoint_path(cfg.run_dir)


def _keep_best(run_dir: Path, saved: Path, metrics: dict, history: list[dict], key: str) -> None:
    if key in metrics and metrics[key] >= max(m.get(key, float("-inf")) for m in history):
        shutil.copyfile(saved, run_dir / "checkpoints" / "best.pt")


def _save_checkpoint(path: Path, model, optimizer, scheduler, scaler, epoch: int, cfg: RunConfig, split: dict,
                     extra: dict) -> Path:
    return save_checkpoint(path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                  "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
                                  "config": cfg.model_dump(), "split": split, **extra})


def _read_history(run_dir: Path, start_epoch: int) -> list[dict]:
    """Metrics of the epochs a resumed run already has; later lines (from an interrupted epoch) are dropped."""
    log = run_dir / "metrics.jsonl"
    if not log.exists():
        return []
    kept = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    kept = [m for m in kept if m["epoch"] <= start_epoch]
    log.write_text("".join(json.dumps(m) + "\n" for m in kept))
    return kept


def _write_costs(model: nn.Module, cfg: RunConfig, data: Prepared, run_dir: Path) -> None:
    convention = model_entry(cfg.model.name).cost_convention
    report = costs_report(cfg.model.name, model, data.image_size, convention)
    (run_dir / "costs.json").write_text(json.dumps(report))
