"""Datasets: specs → cached uint8 tensors → seeded held-out split → batch iterators."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .loader import CIFAR10_CLASSES, NORMALIZATION, TensorBatches, holdout_split
from .sources import DataError, ImageTensors, load_splits

__all__ = ["DataError", "ImageTensors", "TensorBatches", "Prepared", "prepare_data", "load_splits", "holdout_split"]


@dataclass
class Prepared:
    train: TensorBatches
    holdout: TensorBatches | None
    test: TensorBatches
    classes: list[str]
    split: dict  # {"holdout": indices, "train": indices, "n": #train images, "seed": seed}: saved with the run

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _normalization(kind: str, splits: dict[str, ImageTensors]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    train = splits["train"]
    if kind == "auto":
        if train.classes == CIFAR10_CLASSES:
            kind = "cifar10"
        elif len(train.classes) == 100 and train.images.shape[-1] == 32:
            kind = "cifar100"
        else:
            kind = "computed"
    if kind != "computed":
        return NORMALIZATION[kind]
    pixels = train.images.float().div_(255).transpose(0, 1).reshape(train.images.shape[1], -1)
    return tuple(pixels.mean(1).tolist()), tuple(pixels.std(1).tolist())


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


def prepare_data(data_cfg, batch_size: int, eval_batch_size: int, seed: int, saved_split: dict | None = None,
                 rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu") -> Prepared:
    splits = load_splits(data_cfg.dataset, data_cfg.cache_dir)
    train, test = splits["train"], splits["test"]
    mean, std = _normalization(data_cfg.normalization, splits)
    split = make_split(len(train), data_cfg, saved_split)
    test_idx = _seeded_subset(torch.arange(len(test)), data_cfg.test_subset, data_cfg.holdout_seed + 2)

    def batches(source: ImageTensors, idx: torch.Tensor, train_mode: bool, shard: bool, bs: int) -> TensorBatches:
        return TensorBatches(source.images[idx], source.labels[idx], bs, mean, std,
                             augment=train_mode, shuffle=train_mode, drop_last=False, seed=seed,
                             rank=rank if shard else 0, world_size=world_size if shard else 1, device=device)

    holdout_aug = data_cfg.holdout_transform == "train"
    return Prepared(
        train=batches(train, split["train"], True, True, batch_size),
        holdout=batches(train, split["holdout"], holdout_aug, False, eval_batch_size) if len(split["holdout"]) else None,
        test=batches(test, test_idx, False, False, eval_batch_size),
        classes=train.classes,
        split=split,
    )
