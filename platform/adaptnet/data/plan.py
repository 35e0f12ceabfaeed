"""The data plan, decided once: which loader, which transform and normalisation, the listing and the held-out
split. A streaming run's plan (`StreamPlan`) is made where the run starts (on the driver of a Ray run, before
any worker) and shipped to every rank, which turns it into its batches (`streamed`) with the batch class of its
loader: the DataLoader twin here, Ray Data's on the cluster side (adaptnet.cluster.run.ray_data).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .catalog import DatasetInfo, TORCHVISION_SETS, inspect_dataset, open_reader
from .decode import decode_tensor
from .errors import DataError
from .loader import CIFAR10_CLASSES, NORMALIZATION, holdout_split
from .readers import Listing, ShardReader
from .shard_stream import ShardStream
from .streaming import ImageFiles, StreamingBatches
from .transforms import eval_size, eval_transform, train_transform

MAX_DECODE_WORKERS = 16  # beyond this, more processes per rank mostly add memory (prefetched batches)


@dataclass
class Prepared:
    train: Any                 # TensorBatches | StreamingBatches | a Ray Data twin
    holdout: Any | None
    test: Any
    classes: list[str]
    split: dict                # {"holdout": indices, "train": indices, "n": #train images, "seed": seed}: saved with the run
    image_size: int = 32       # side of the images the model sees at evaluation (its cost is counted there)
    loader: str = "memory"
    transform: str = "cifar"

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _seeded_subset(indices: torch.Tensor, size: int | None, seed: int) -> torch.Tensor:
    if size is None or size >= len(indices):
        return indices
    pick = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))[:size]
    return indices[pick.sort().values]


def make_split(n_train: int, data_cfg, saved: dict | None = None) -> dict:
    """The run's train/held-out partition: `saved` (from a checkpoint or an earlier stage) wins if given."""
    if saved is not None:
        if saved["n"] != n_train:
            raise DataError(f"data.holdout: the saved split is for {saved['n']} training images, "
                            f"the dataset has {n_train}")
        return saved
    train_idx, holdout_idx = holdout_split(n_train, data_cfg.holdout, data_cfg.holdout_seed)
    train_idx = _seeded_subset(train_idx, data_cfg.train_subset, data_cfg.holdout_seed + 1)
    return {"train": train_idx, "holdout": holdout_idx, "n": n_train, "seed": data_cfg.holdout_seed}


def eval_indices(n_test: int, data_cfg) -> torch.Tensor:
    return _seeded_subset(torch.arange(n_test), data_cfg.test_subset, data_cfg.holdout_seed + 2)


def choose_loader(data_cfg, on_ray: bool = False, info: DatasetInfo | None = None) -> str:
    """`data.loader`, with auto resolved: memory for torchvision's arrays, and for folders and archives whose
    sampled images share one size, whose decoded pixels fit `memory_limit_gb` and whose transform is CIFAR's
    (the memory loader's batched crop); else streaming (ray on Ray, else torch)."""
    if data_cfg.loader == "ray" and not on_ray:
        raise DataError("data.loader: ray streams through Ray Data and needs a run on Ray (--workers N)")
    if data_cfg.loader != "auto":
        return data_cfg.loader
    if data_cfg.dataset.lower() in TORCHVISION_SETS:
        return "memory"
    info = info or inspect_dataset(data_cfg.dataset, data_cfg.cache_dir)
    if info.one_size and info.format in ("folder", "archive") and data_cfg.transform != "imagenet":
        w = h = _side(info)
        if sum(info.counts.values()) * 3 * w * h <= data_cfg.memory_limit_gb * 1e9:
            return "memory"
    return "ray" if on_ray else "torch"


def transform_kind(data_cfg, info: DatasetInfo) -> str:
    """auto: the CIFAR transforms for images that all share one size of at most 32 px, else ImageNet's."""
    if data_cfg.transform != "auto":
        return data_cfg.transform
    return "cifar" if info.one_size and _side(info) <= 32 else "imagenet"


def _side(info: DatasetInfo) -> int:
    """The training images' usual width (the sampled median: an odd image does not move it)."""
    usual = info.sizes.get("train", {}).get("median")
    return int(usual.split("×")[0]) if usual else 224


def _normalization(kind: str, classes: list[str], side: int, compute) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if kind == "auto":
        if classes == CIFAR10_CLASSES:
            kind = "cifar10"
        elif len(classes) == 100 and side == 32:
            kind = "cifar100"
        elif side > 32:
            kind = "imagenet"
        else:
            kind = "computed"
    return NORMALIZATION[kind] if kind != "computed" else compute()


@dataclass(frozen=True)
class DataPlan:
    """What a run decides about its data before anything starts, in one place (`decide`): preflight, --dry-run
    and the Ray driver read it. A streaming run then lists its files into a `StreamPlan`."""
    info: DatasetInfo      # classes, counts and sampled image sizes (`inspect`)
    loader: str            # memory | torch | ray
    kind: str              # the transform: cifar | imagenet
    side: int              # the training images' usual side
    eval_size: int         # the side the model sees at evaluation (its cost is counted there)


def decide(data_cfg, on_ray: bool = False, info: DatasetInfo | None = None) -> DataPlan:
    """The run's DataPlan (`info`: the dataset already inspected, if it was)."""
    info = info or inspect_dataset(data_cfg.dataset, data_cfg.cache_dir)
    loader = choose_loader(data_cfg, on_ray=on_ray, info=info)
    side = _side(info)
    kind = "cifar" if loader == "memory" else transform_kind(data_cfg, info)
    return DataPlan(info, loader, kind, side, eval_size(kind, data_cfg.augment, side))


@dataclass
class StreamPlan:
    """A streaming run's data, decided once: the reader and its listing, the transform kind, the normalisation,
    the image side and the held-out split."""
    reader: Any
    listing: Listing
    kind: str
    mean: tuple
    std: tuple
    side: int
    split: dict


def streaming_plan(data_cfg, info: DatasetInfo | None = None, saved_split: dict | None = None) -> StreamPlan:
    """The plan every streaming loader follows (`saved_split`: a checkpoint's or an earlier stage's split)."""
    reader = open_reader(data_cfg.dataset, data_cfg.cache_dir)
    listing = reader.listing()
    info = info or inspect_dataset(data_cfg.dataset, data_cfg.cache_dir)
    side = _side(info)
    kind = transform_kind(data_cfg, info)

    def computed():  # a sample of training images through the eval transform, scaled to [0, 1]
        plain = eval_transform(kind, data_cfg.augment, (0.0,) * 3, (1.0,) * 3, side)
        refs, _ = listing.splits["train"]
        picks = torch.linspace(0, len(refs) - 1, min(256, len(refs))).long().tolist()
        decoded = []
        for i in picks:
            try:
                decoded.append(plain(decode_tensor(reader.read(refs[i]), reader.describe(refs[i]))).float() / 255)
            except DataError:  # counted (or fatal) when training reaches it
                continue
        pixels = torch.stack(decoded)
        flat = pixels.transpose(0, 1).reshape(3, -1)
        return tuple(flat.mean(1).tolist()), tuple(flat.std(1).tolist())

    mean, std = _normalization(data_cfg.normalization, listing.classes, side, computed)
    return StreamPlan(reader, listing, kind, mean, std, side, make_split(listing.count("train"), data_cfg, saved_split))


def decode_workers(setting: int | None, cpus: int | None = None) -> int:
    """`data.workers`, or one decode process per CPU of this rank less one for training, at most 16. The rank's
    CPUs default to torch's thread count, which Ray workers and trials set to the CPUs they reserved."""
    if setting is not None:
        return setting
    return max(0, min((cpus or torch.get_num_threads()) - 1, MAX_DECODE_WORKERS))


def decode_on(setting: str, kind: str, device: torch.device | str) -> str:
    """`data.decode` resolved for a rank's device: gpu needs CUDA (one line naming the field otherwise); auto
    is gpu for ImageNet-style transforms on CUDA (CIFAR's 32-px images gain nothing from nvjpeg), else cpu."""
    cuda = torch.device(device).type == "cuda"
    if setting == "gpu" and not cuda:
        raise DataError("data.decode: gpu decodes with nvjpeg on the training GPU and this run has no CUDA device; "
                        "use auto or cpu")
    if setting == "auto":
        return "gpu" if cuda and kind == "imagenet" else "cpu"
    return setting


def streamed(plan: StreamPlan, data_cfg, batch_size: int, eval_batch_size: int, seed: int, rank: int = 0,
             world_size: int = 1, device: torch.device | str = "cpu", batches_class=StreamingBatches,
             loader: str = "torch", with_ids: bool = False) -> Prepared:
    """One rank's batches of a plan: its stride of each training epoch, its shard of held-out and test."""
    kind, mean, std, side, split, listing = plan.kind, plan.mean, plan.std, plan.side, plan.split, plan.listing
    train_tf = train_transform(kind, data_cfg.augment, mean, std, side)
    eval_tf = eval_transform(kind, data_cfg.augment, mean, std, side)
    holdout_tf = train_tf if data_cfg.holdout_transform == "train" else eval_tf
    on_gpu = decode_on(data_cfg.decode, kind, device) == "gpu"
    stream = data_cfg.shard_reading == "stream" and isinstance(plan.reader, ShardReader)

    def batches(split_name: str, idx: torch.Tensor, transform, train_mode: bool, bs: int) -> StreamingBatches:
        refs, labels = listing.splits[split_name]
        picked = refs[idx.numpy()] if isinstance(refs, np.ndarray) else [refs[i] for i in idx.tolist()]  # shards: rows
        files = ImageFiles(plan.reader, picked, labels[idx.numpy()], None if on_gpu else transform, seed)
        repeats = data_cfg.augment.repeated_augment if train_mode else 1
        streams = stream and train_mode and repeats == 1  # tar shards' training split: whole shards, streamed
        return batches_class(files, bs, shuffle=train_mode, seed=seed, rank=rank if train_mode else 0,
                             world_size=world_size if train_mode else 1, repeats=repeats,
                             workers=decode_workers(data_cfg.workers), prefetch=data_cfg.prefetch, device=device,
                             bad_images=data_cfg.bad_images, mean=mean, std=std,
                             device_transform=transform if on_gpu else None, with_ids=with_ids,
                             stream=ShardStream(files, seed, rank, world_size, data_cfg.shuffle_buffer) if streams else None)

    shard = slice(rank, None, world_size)  # evaluation: each rank every world_size-th image, none twice
    return Prepared(
        train=batches("train", split["train"], train_tf, True, batch_size),
        holdout=batches("train", split["holdout"][shard], holdout_tf, False, eval_batch_size) if len(split["holdout"]) else None,
        test=batches("test", eval_indices(listing.count("test"), data_cfg)[shard], eval_tf, False, eval_batch_size),
        classes=listing.classes, split=split, image_size=eval_size(kind, data_cfg.augment, side), loader=loader,
        transform=kind)
