"""Data sources behind one interface: `prepare_data` gives per-rank train / held-out / test batch iterables
(`set_epoch`, `len`, yielding (images, labels) on the device) and the loop never knows which kind it got.

  memory  the decoded uint8 tensor cache (sources.py + loader.py): small same-size sets such as CIFAR
  torch   streaming JPEG decode in DataLoader worker processes (streaming.py), memory bounded by batches
  ray     streaming through Ray Data on a Ray cluster: built by adaptnet.cluster.ray_data, same split

The held-out split is drawn on the training file list (indices in the listing's fixed order), so it is the
same set of images for every loader and on every node.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .catalog import DatasetInfo, TORCHVISION_SETS, inspect_dataset, is_archive, open_reader
from .decode import decode_tensor
from .errors import DataError
from .loader import CIFAR10_CLASSES, NORMALIZATION, TensorBatches, holdout_split, resident
from .sources import ImageTensors, load_splits
from .streaming import ImageFiles, StreamingBatches, epoch_order
from .transforms import eval_size, eval_transform, train_transform

MAX_DECODE_WORKERS = 16  # beyond this, more processes per rank mostly add memory (prefetched batches)

__all__ = ["DataError", "DatasetInfo", "ImageTensors", "TensorBatches", "StreamingBatches", "Prepared",
           "prepare_data", "load_splits", "holdout_split", "inspect_dataset", "choose_loader", "decode_on", "make_split",
           "epoch_order", "open_reader"]


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


def prepare_data(data_cfg, batch_size: int, eval_batch_size: int, seed: int, saved_split: dict | None = None,
                 rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu",
                 loader: str | None = None) -> Prepared:
    """Per-rank batches of `batch_size` (one forward pass) for a single process or a torch.distributed rank;
    `loader` is the resolved `data.loader` (default: resolved here)."""
    loader = loader or choose_loader(data_cfg)
    if loader == "memory":
        return _memory(data_cfg, batch_size, eval_batch_size, seed, saved_split, rank, world_size, device)
    if loader == "torch":
        return _streaming(data_cfg, batch_size, eval_batch_size, seed, saved_split, rank, world_size, device)
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


def streaming_plan(data_cfg, info: DatasetInfo | None = None):
    """What both streaming loaders share: the reader, its listing, the transform kind and normalisation."""
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
                decoded.append(plain(decode_tensor(reader.read(refs[i]), str(refs[i]))).float() / 255)
            except DataError:  # counted (or fatal) when training reaches it
                continue
        pixels = torch.stack(decoded)
        flat = pixels.transpose(0, 1).reshape(3, -1)
        return tuple(flat.mean(1).tolist()), tuple(flat.std(1).tolist())

    mean, std = _normalization(data_cfg.normalization, listing.classes, side, computed)
    return reader, listing, kind, mean, std, side


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


def _streaming(data_cfg, batch_size, eval_batch_size, seed, saved_split, rank, world_size, device) -> Prepared:
    reader, listing, kind, mean, std, side = streaming_plan(data_cfg)
    split = make_split(listing.count("train"), data_cfg, saved_split)
    train_tf = train_transform(kind, data_cfg.augment, mean, std, side)
    eval_tf = eval_transform(kind, data_cfg.augment, mean, std, side)
    holdout_tf = train_tf if data_cfg.holdout_transform == "train" else eval_tf
    on_gpu = decode_on(data_cfg.decode, kind, device) == "gpu"

    def batches(split_name: str, idx: torch.Tensor, transform, train_mode: bool, bs: int) -> StreamingBatches:
        refs, labels = listing.splits[split_name]
        files = ImageFiles(reader, [refs[i] for i in idx.tolist()], labels[idx.numpy()],
                           None if on_gpu else transform, seed)
        return StreamingBatches(files, bs, shuffle=train_mode, seed=seed, rank=rank if train_mode else 0,
                                world_size=world_size if train_mode else 1,
                                repeats=data_cfg.augment.repeated_augment if train_mode else 1,
                                workers=decode_workers(data_cfg.workers), prefetch=data_cfg.prefetch, device=device,
                                bad_images=data_cfg.bad_images, mean=mean, std=std,
                                device_transform=transform if on_gpu else None)

    shard = slice(rank, None, world_size)  # evaluation: each rank every world_size-th image, none twice
    return Prepared(
        train=batches("train", split["train"], train_tf, True, batch_size),
        holdout=batches("train", split["holdout"][shard], holdout_tf, False, eval_batch_size) if len(split["holdout"]) else None,
        test=batches("test", eval_indices(listing.count("test"), data_cfg)[shard], eval_tf, False, eval_batch_size),
        classes=listing.classes, split=split, image_size=eval_size(kind, data_cfg.augment, side), loader="torch",
        transform=kind)
