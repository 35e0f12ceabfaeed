"""Batches from decoded uint8 tensors with CIFAR augmentation done batch-wise (IMTA brief §5.1).

Shuffling and augmentation draw from a generator seeded by (seed, epoch), so an epoch's batches are
the same whether training ran straight through or resumed from a checkpoint. With `world_size > 1`
every rank sees a disjoint, equally long shard of the epoch's permutation (as DistributedSampler).
A split is a list of indices into the cached tensor: batches gather from it, the split is never copied.
"""
from __future__ import annotations

import math

import torch

from .streaming import epoch_generator, epoch_order

NORMALIZATION = {
    "cifar10": ((0.4914, 0.4824, 0.4467), (0.2471, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def holdout_split(n: int, holdout: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices): `holdout` images drawn by a seeded permutation."""
    if not 0 <= holdout < n:
        raise ValueError(f"data.holdout: must be in [0, {n}), got {holdout}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[holdout:].sort().values, perm[:holdout].sort().values


def random_crop_flip(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """RandomCrop(size, padding, zero fill) + RandomHorizontalFlip for a uint8 batch, per sample. The draws come
    from the CPU `generator` wherever the batch is, so a GPU-resident cache crops exactly as a host one."""
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    flip = torch.rand(n, generator=generator) < 0.5
    cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
    where = images.device
    return padded[torch.arange(n, device=where)[:, None, None, None],
                  torch.arange(images.shape[1], device=where)[None, :, None, None], rows.to(where), cols.to(where)]


DEVICE_CACHE_SHARE = 0.1  # a uint8 cache up to this share of the GPU's memory lives on the GPU (CIFAR: 150 MB)


def resident(images: torch.Tensor, device: torch.device | str, device_bytes: int | None = None) -> torch.Tensor:
    """Where a split's uint8 cache is best kept for `device`: on the GPU when it takes at most
    DEVICE_CACHE_SHARE of its memory (`device_bytes`, default the GPU's total), so batches are gathered and
    cropped there with no host copy; else where it is (host memory; batches are pinned on their way to a GPU)."""
    device = torch.device(device)
    if device.type != "cuda":
        return images
    total = device_bytes if device_bytes is not None else torch.cuda.get_device_properties(device).total_memory
    return images.to(device) if images.numel() * images.element_size() <= DEVICE_CACHE_SHARE * total else images


class TensorBatches:
    """Iterates (float images normalised, labels) over a uint8 image tensor (the rows `indices`, default all),
    batch by batch."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augment: bool = False,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        padding: int = 4,
        device: torch.device | str = "cpu",
        indices: torch.Tensor | None = None,
        repeats: int = 1,
    ):
        self.images, self.labels = images, labels
        self.indices = torch.arange(len(labels)) if indices is None else indices
        self.repeats = repeats
        self.batch_size, self.augment, self.shuffle, self.drop_last = batch_size, augment, shuffle, drop_last
        self.seed, self.rank, self.world_size, self.padding = seed, rank, world_size, padding
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1) * 255
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        per_rank = math.ceil(len(self.indices) / self.world_size)
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def __iter__(self):
        generator = epoch_generator(self.seed, self.epoch)
        order = self.indices[epoch_order(len(self.indices), generator, self.shuffle, self.rank, self.world_size,
                                         self.repeats)]
        pin = self.device.type == "cuda" and self.images.device.type == "cpu"  # pinned: the copy overlaps compute
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.images[idx.to(self.images.device)]
            if self.augment:
                x = random_crop_flip(x, self.padding, generator)
            x = (x.pin_memory() if pin else x).to(self.device, non_blocking=True)
            x = (x.float() - self.mean) / self.std
            yield x, self.labels[idx].to(self.device, non_blocking=True)
