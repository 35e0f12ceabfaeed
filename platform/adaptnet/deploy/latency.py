"""Measured latency on the device the model runs on, per image: warm-up passes, then the median over timed
repeats of a pass over real held-out images in batches of 1 and of a throughput size (CUDA synchronised).
A sweep objective next to multiply-adds, and what bench/deploy.py compares with the MACs' prediction."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def per_image_ms(fn: Callable[[torch.Tensor], object], images: torch.Tensor, batch: int, warmup: int = 1,
                 repeats: int = 5) -> float:
    """Median over `repeats` of the time of one pass of `fn` over `images` in batches of `batch`, per image."""
    chunks = list(images.split(batch))

    def one_pass() -> float:
        start = time.perf_counter()
        for x in chunks:
            fn(x)
        _sync(images.device)
        return time.perf_counter() - start

    for _ in range(warmup):
        one_pass()
    return 1e3 * statistics.median(one_pass() for _ in range(repeats)) / len(images)


def holdout_images(data, count: int) -> torch.Tensor:
    """The first `count` held-out images, normalised, on the data's device."""
    taken, n = [], 0
    for x, _ in data.holdout:
        taken.append(x)
        n += len(x)
        if n >= count:
            break
    return torch.cat(taken)[:count]


def latency_metrics(checkpoint, budgets=(), batch_sizes=(1, 64), device: str = "auto", single_images: int = 32,
                    warmup: int = 1, repeats: int = 5) -> dict[str, float]:
    """`final/latency_ms_<output>_b<batch>` (ms per image) of a checkpoint's deployable models on this device:
    an ADN net's static super- and base-net; a multi-exit net's real early exit at each budget (`budget<i>`,
    thresholds calibrated on the held-out split as `adaptnet export` does) and its full network (`full`)."""
    from ..loop.evaluate import load_checkpoint_model
    from ..metrics.adaptive import calibrate, choose_point, collect_probs, early_exit_predict
    from ..metrics.costs import exit_costs
    from ..models import SkippableDepthNet
    from .subnet import extract_subnet

    _, data, model = load_checkpoint_model(checkpoint, device)
    images = holdout_images(data, max(max(batch_sizes), single_images))
    if isinstance(model, SkippableDepthNet):
        runs = {name: extract_subnet(model, (flag,) * model.num_stages) for name, flag in (("super", False), ("base", True))}
    else:
        costs = [c.macs for c in exit_costs(model, data.image_size)]
        points = calibrate(*collect_probs(model, data.holdout), costs)
        runs = {"full": model}
        for i, budget in enumerate(budgets, 1):
            if budget >= costs[0]:
                thresholds = torch.tensor(choose_point(points, budget).thresholds, dtype=torch.float32)
                runs[f"budget{i}"] = lambda x, t=thresholds: early_exit_predict(model, x, t)
    out = {}
    for name, fn in runs.items():
        for b in batch_sizes:
            sample = images[:single_images] if b == 1 else images
            out[f"final/latency_ms_{name}_b{b}"] = per_image_ms(fn, sample, b, warmup, repeats)
    return out
