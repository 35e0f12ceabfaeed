"""Data sources behind one interface: `prepare_data` gives per-rank train / held-out / test batch iterables
(`set_epoch`, `len`, yielding (images, labels) on the device) and the loop never knows which kind it got.

  memory  the decoded uint8 tensor cache (sources.py + loader.py): small same-size sets such as CIFAR
  torch   streaming JPEG decode in DataLoader worker processes (streaming.py), memory bounded by batches
  ray     streaming through Ray Data on a Ray cluster (adaptnet.cluster.run.ray_data), from the same plan

Every loader reads a tree by one rule (readers.py: the same files, labels and order), and the held-out split
is drawn on that training file list, so it is the same set of images for every loader and on every node.
The streaming loaders follow one decided plan (plan.py).
"""
from __future__ import annotations

import torch

from .catalog import DatasetInfo, inspect_dataset, open_reader
from .errors import DataError
from .loader import TensorBatches, holdout_split, resident
from .plan import (Prepared, StreamPlan, _normalization, choose_loader, decode_on, decode_workers, eval_indices,
                   make_split, streamed, streaming_plan)
from .sources import ImageTensors, load_splits
from .streaming import StreamingBatches, epoch_order

__all__ = ["DataError", "DatasetInfo", "ImageTensors", "TensorBatches", "StreamingBatches", "Prepared",
           "prepare_data", "load_splits", "holdout_split", "inspect_dataset", "choose_loader", "decode_on", "make_split",
           "epoch_order", "open_reader", "StreamPlan", "streaming_plan", "streamed", "decode_workers", "eval_indices"]


def prepare_data(data_cfg, batch_size: int, eval_batch_size: int, seed: int, saved_split: dict | None = None,
                 rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu",
                 loader: str | None = None) -> Prepared:
    """Per-rank batches of `batch_size` (one forward pass) for a single process or a torch.distributed rank;
    `loader` is the resolved `data.loader` (default: resolved here)."""
    loader = loader or choose_loader(data_cfg)
    if loader == "memory":
        return _memory(data_cfg, batch_size, eval_batch_size, seed, saved_split, rank, world_size, device)
    if loader == "torch":
        plan = streaming_plan(data_cfg, saved_split=saved_split)
        return streamed(plan, data_cfg, batch_size, eval_batch_size, seed, rank, world_size, device)
    raise DataError(f"data.loader: {loader} batches are built by the cluster side (adaptnet.cluster.ray_data)")


def _memory(data_cfg, batch_size, eval_batch_size, seed, saved_split, rank, world_size, device) -> Prepared:
    splits = load_splits(data_cfg.dataset, data_cfg.cache_dir)
    train, test = splits["train"], splits["test"]
    side = train.images.shape[-1]

    def computed():
        pixels = train.images.float().div_(255).transpose(0, 1).reshape(train.images.shape[1], -1)
        return tuple(pixels.mean(1).tolist()), tuple(pixels.std(1).tolist())

    mean, std = _normalization(data_cfg.normalization, train.classes, side, computed)
    split = make_split(len(train), data_cfg, saved_split)

    kept = {id(source): resident(source.images, device) for source in (train, test)}  # each cache once on a GPU

    def batches(source: ImageTensors, idx: torch.Tensor, train_mode: bool, shard: bool, bs: int) -> TensorBatches:
        return TensorBatches(kept[id(source)], source.labels, bs, mean, std, augment=train_mode, shuffle=train_mode,
                             drop_last=False, seed=seed, rank=rank if shard else 0,
                             world_size=world_size if shard else 1, device=device, indices=idx,
                             repeats=data_cfg.augment.repeated_augment if shard else 1)

    holdout_aug = data_cfg.holdout_transform == "train"
    shard = slice(rank, None, world_size)  # evaluation: each rank every world_size-th image, none twice
    return Prepared(
        train=batches(train, split["train"], True, True, batch_size),
        holdout=batches(train, split["holdout"][shard], holdout_aug, False, eval_batch_size) if len(split["holdout"]) else None,
        test=batches(test, eval_indices(len(test), data_cfg)[shard], False, False, eval_batch_size),
        classes=train.classes, split=split, image_size=side, loader="memory", transform="cifar")


