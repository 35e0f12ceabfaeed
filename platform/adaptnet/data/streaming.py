"""The torch DataLoader source: JPEGs decoded on the fly in worker processes, memory bounded by
batch × prefetch × workers (never by the dataset's size).

Every epoch has one seeded order (`epoch_order`, shared with the in-memory loader): ranks take disjoint,
equally long strides of it (the last ones wrap, as DistributedSampler), and each sample's random transform
is seeded by (seed, epoch, index), so a run is reproducible whatever the number of loader workers.
"""
from __future__ import annotations

import math
import sys

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .decode import decode_rgb
from .errors import DataError
from .transforms import normalize_batch


def epoch_order(n: int, generator: torch.Generator, shuffle: bool, rank: int = 0, world_size: int = 1,
                repeats: int = 1) -> torch.Tensor:
    """The indices one rank visits in one epoch: a permutation (drawn from `generator`) of which rank r takes
    every world_size-th entry from r, padded by wrapping so that all ranks get ceil(n / world_size).
    `repeats` > 1 is repeated augmentation (RASampler): each index k times in a row, so its copies land on
    different ranks, and each rank still visits ceil(n / world_size) entries."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if repeats > 1:
        order = order.repeat_interleave(repeats)
    per_rank = math.ceil(n / world_size)
    total = per_rank * world_size
    if len(order) < total:
        order = torch.cat([order, order[: total - len(order)]])
    return order[rank:total:world_size][:per_rank]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


class _EpochSampler(Sampler):
    """Yields (epoch, index) so that workers can seed each sample's transform."""

    def __init__(self, n: int, seed: int, shuffle: bool, rank: int, world_size: int, repeats: int):
        self.n, self.seed, self.shuffle, self.rank, self.world_size, self.repeats = n, seed, shuffle, rank, world_size, repeats
        self.epoch = 0

    def __iter__(self):
        order = epoch_order(self.n, epoch_generator(self.seed, self.epoch), self.shuffle, self.rank,
                            self.world_size, self.repeats)
        return iter([(self.epoch, int(i)) for i in order])

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size)


class ImageFiles(Dataset):
    """(epoch, i) → (image tensor, label, i), or an error string when the file cannot be decoded."""

    def __init__(self, reader, refs: list, labels, transform, seed: int):
        self.reader, self.refs, self.labels, self.transform, self.seed = reader, refs, labels, transform, seed

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, item: tuple[int, int]):
        epoch, i = item
        try:
            image = decode_rgb(self.reader.read(self.refs[i]), str(self.refs[i]))
        except DataError as err:
            return str(err)
        with torch.random.fork_rng(devices=[]):  # the training process's own RNG stays untouched
            torch.manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + i)
            try:
                return self.transform(image), int(self.labels[i]), i
            except DataError as err:  # an image the transform cannot take (SameSize)
                return f"{self.refs[i]}: {err}"


def _collate(items: list):
    errors = [item for item in items if isinstance(item, str)]
    good = [item for item in items if not isinstance(item, str)]
    if not good:
        return None, None, None, errors
    return (torch.stack([g[0] for g in good]), torch.tensor([g[1] for g in good]),
            torch.tensor([g[2] for g in good]), errors)


class StreamingBatches:
    """Per-rank batches of one split from a DataLoader over `ImageFiles`; `set_epoch` picks the order.
    Undecodable images are skipped and counted (`skipped`; one stderr line each) or, with
    `bad_images="fail"`, stop the run with that line as a DataError."""

    def __init__(self, files: ImageFiles, batch_size: int, *, shuffle: bool, seed: int, rank: int = 0,
                 world_size: int = 1, repeats: int = 1, workers: int = 2, prefetch: int = 2,
                 device: torch.device | str = "cpu", bad_images: str = "skip", with_ids: bool = False,
                 mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
        self.device = torch.device(device)
        self.mean, self.std = mean, std  # for uint8 batches (normalize_batch)
        self.sampler = _EpochSampler(len(files), seed, shuffle, rank, world_size, repeats)
        self.batch_size, self.bad_images, self.with_ids = batch_size, bad_images, with_ids
        self.skipped = 0
        self.loader = DataLoader(
            files, batch_size=batch_size, sampler=self.sampler, num_workers=workers, collate_fn=_collate,
            pin_memory=self.device.type == "cuda", prefetch_factor=prefetch if workers else None,
            # the train loader's processes live for the run; evaluation starts its own when it runs
            persistent_workers=workers > 0 and shuffle, multiprocessing_context="forkserver" if workers else None)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self):
        for images, labels, ids, errors in self.loader:
            for error in errors:
                if self.bad_images == "fail":
                    raise DataError(f"{error} (data.bad_images: fail)")
                self.skipped += 1
                sys.stderr.write(f"skipped: {error}\n")
            if images is None:  # a rank must never yield fewer batches than the others (DDP would stall)
                raise DataError(f"data.dataset: every image of a batch failed to decode, e.g. {errors[0]}")
            images = normalize_batch(images.to(self.device, non_blocking=True), self.mean, self.std)
            labels = labels.to(self.device, non_blocking=True)
            yield (images, labels, ids) if self.with_ids else (images, labels)
