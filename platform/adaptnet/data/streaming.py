"""The torch DataLoader source: JPEGs decoded on the fly in worker processes, memory bounded by
batch × (prefetch + 1) × workers (never by the dataset's size; batch_ring.py).

Every epoch has one seeded order (`epoch_order`, shared with the in-memory loader): ranks take disjoint,
equally long strides of it (the last ones wrap, as DistributedSampler), and each sample's random transform
is seeded by (seed, epoch, index), so a run is reproducible whatever the number of loader workers.
"""
from __future__ import annotations

import math
import multiprocessing
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from .batch_ring import BatchRing
from .decode import decode_jpegs, decode_tensor, encoded_jpeg
from .errors import DataError
from .rebatch import rebatch
from .transforms import normalize_batch, stack_images


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


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's random transform in one epoch (every loader, any number of processes)."""
    return (seed * 1_000_003 + epoch) * 10_000_019 + index


def seeded(transform, image: torch.Tensor, seed: int, own_process: bool):
    """`transform(image)` with torch's CPU RNG (where transforms.v2 draws, whatever the image's device) seeded by
    `seed`; in a process that also trains (`own_process` False) inside fork_rng, so that the training RNG stays
    untouched. Only the CPU generator is seeded: torch.manual_seed also queues every accelerator's seeding,
    recording a stack trace each time (0.7 ms, half a JPEG decode, per sample)."""
    if own_process:
        torch.default_generator.manual_seed(seed)
        return transform(image)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return transform(image)


class PackedRefs:
    """File names or object keys (str refs) as one UTF-8 byte array and its offsets, indexed as the list was.
    It pickles as two arrays, so whoever receives a rank's files rebuilds no string per sample: every Ray Data
    task does (its function carries them), and a rank's 160k ImageNet paths took 11 ms to unpickle as a list
    (0.17 ms of CPU per image of a 64-image task) against 0.2 ms packed."""

    def __init__(self, refs: list[str]):
        encoded = [ref.encode() for ref in refs]
        self.ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)
        self.blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> str:
        i = range(len(self.ends))[i]  # negative indices as a list's; IndexError past the end
        start = int(self.ends[i - 1]) if i else 0
        return self.blob[start:int(self.ends[i])].tobytes().decode()

    def __iter__(self):
        return (self[i] for i in range(len(self)))


class ImageFiles(Dataset):
    """(epoch, i) → (image tensor, label, i), or an error string when the file cannot be decoded. With
    `transform=None` (data.decode: gpu) JPEGs stay encoded: (uint8 bytes, label, i, True), for the training
    process to decode on its GPU; other formats are decoded here (…, False). `refs`: the reader's refs of
    these samples (str refs are kept packed)."""

    def __init__(self, reader, refs, labels, transform, seed: int):
        self.reader, self.labels, self.transform, self.seed = reader, labels, transform, seed
        self.refs = PackedRefs(refs) if isinstance(refs, list) and all(isinstance(r, str) for r in refs) else refs

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, item: tuple[int, int]):
        epoch, i = item
        try:
            data = self.reader.read(self.refs[i])
        except DataError as err:
            return str(err)
        return self.sample(epoch, i, data)

    def sample(self, epoch: int, i: int, data: bytes):
        """Sample i of the list from its bytes (read at random, or streamed with its shard)."""
        name = self.reader.describe(self.refs[i])
        try:
            if self.transform is None:
                if encoded_jpeg(data, name):
                    return torch.frombuffer(bytearray(data), dtype=torch.uint8), int(self.labels[i]), i, True
                return decode_tensor(data, name), int(self.labels[i]), i, False
            image = decode_tensor(data, name)
        except DataError as err:
            return str(err)
        try:
            own = get_worker_info() is not None  # a decode process: its RNG is its own
            return seeded(self.transform, image, sample_seed(self.seed, epoch, i), own), int(self.labels[i]), i
        except DataError as err:  # an image the transform cannot take (SameSize)
            return f"{name}: {err}"


def _all_failed(errors: list[str]):
    """A rank must never yield fewer batches than the others (DDP would stall): a batch with no image ends the run."""
    raise DataError(f"data.dataset: every image of a batch failed to decode, e.g. {errors[0]}")


def decode_processes():
    """Where decode processes start: forked from a forkserver that imported this module (torch, torchvision,
    the readers) once, so each evaluation's processes start in ≈ 0.5 s instead of ≈ 2.7 s of imports (the
    ImageNet sample, 2 processes). The preload takes effect when the process's forkserver first starts."""
    multiprocessing.set_forkserver_preload([__name__])
    return multiprocessing.get_context("forkserver")


STREAM_CHUNK = 8  # samples a streaming decode process hands over at a time (regrouped into batches)


class Collate:
    """Good samples stacked (or, still encoded, listed), errors apart; with `ring`, a decode process stacks
    them into its reused shared buffers (batch_ring.py)."""

    def __init__(self, ring: int = 0):
        self.ring = BatchRing(ring) if ring else None

    def __call__(self, items: list) -> dict:
        good = [item for item in items if not isinstance(item, str)]
        batch = {"errors": [item for item in items if isinstance(item, str)], "images": None}
        if good:
            encoded = len(good[0]) == 4
            stack = self.ring.stack if self.ring else stack_images
            batch.update(images=[g[0] for g in good] if encoded else stack([g[0] for g in good]),
                         labels=torch.tensor([g[1] for g in good]), ids=torch.tensor([g[2] for g in good]),
                         encoded=[g[3] for g in good] if encoded else None)
        return batch


class StreamingBatches:
    """Per-rank batches of one split from a DataLoader over `ImageFiles`; `set_epoch` picks the order.
    Undecodable images are skipped and counted (`skipped`; one stderr line each) or, with
    `bad_images="fail"`, stop the run with that line as a DataError. With `device_transform` (data.decode:
    gpu) the files arrive encoded and are decoded on `device` (nvjpeg), then transformed there, each sample
    seeded as a decode process would."""

    def __init__(self, files: ImageFiles, batch_size: int, *, shuffle: bool, seed: int, rank: int = 0,
                 world_size: int = 1, repeats: int = 1, workers: int = 2, prefetch: int = 2,
                 device: torch.device | str = "cpu", bad_images: str = "skip", with_ids: bool = False,
                 mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), device_transform=None, stream=None):
        self.device = torch.device(device)
        self.mean, self.std = mean, std  # for uint8 batches (normalize_batch)
        self.sampler = _EpochSampler(len(files), seed, shuffle, rank, world_size, repeats)
        self.batch_size, self.bad_images, self.with_ids = batch_size, bad_images, with_ids
        self.files, self.seed, self.device_transform = files, seed, device_transform
        self.workers, self.prefetch, self.shuffle = workers, prefetch, shuffle
        self.skipped = 0
        self._loader = None
        self.stream = stream  # an IterableDataset of the epoch in place of files + sampler (shard_stream.py)

    def _collated(self):
        """This epoch's batches as `Collate` makes them: here from a DataLoader (made once, so that the train
        loader's processes live for the run; evaluation starts its own when it runs)."""
        if self.stream is not None:  # new processes each epoch: they take the stream with this epoch's number
            self.stream.epoch = self.sampler.epoch
            chunks = DataLoader(self.stream, batch_size=STREAM_CHUNK, num_workers=self.workers, collate_fn=Collate(),
                                pin_memory=self.device.type == "cuda", prefetch_factor=self.prefetch if self.workers else None,
                                multiprocessing_context=decode_processes() if self.workers else None)
            return rebatch(iter(chunks), self.batch_size)
        if self._loader is None:
            self._loader = DataLoader(
                self.files, batch_size=self.batch_size, sampler=self.sampler, num_workers=self.workers,
                collate_fn=Collate(ring=self.prefetch + 1),  # the batches a decode process may hold, + 1 in use
                generator=torch.Generator().manual_seed(self.seed),  # not the training RNG
                pin_memory=self.device.type == "cuda", prefetch_factor=self.prefetch if self.workers else None,
                persistent_workers=self.workers > 0 and self.shuffle,
                multiprocessing_context=decode_processes() if self.workers else None)
        return iter(self._loader)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def _skip(self, errors: list[str]) -> None:
        for error in errors:
            if self.bad_images == "fail":
                raise DataError(f"{error} (data.bad_images: fail)")
            self.skipped += 1
            sys.stderr.write(f"skipped: {error}\n")

    def _on_device(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoded JPEGs decoded in one nvjpeg call, every image transformed on the device."""
        payloads, ids = batch["images"], batch["ids"].tolist()
        jpegs = [p for p, encoded in zip(payloads, batch["encoded"]) if encoded]
        names = [self.files.reader.describe(self.files.refs[i]) for i, e in zip(ids, batch["encoded"]) if e]
        decoded = iter(decode_jpegs(jpegs, names, self.device))
        images, keep, errors = [], [], []
        for k, (payload, encoded, i) in enumerate(zip(payloads, batch["encoded"], ids)):
            image = next(decoded) if encoded else payload.to(self.device)
            try:
                if isinstance(image, DataError):
                    raise image
                images.append(seeded(self.device_transform, image, sample_seed(self.seed, self.sampler.epoch, i),
                                     own_process=False))
                keep.append(k)
            except DataError as err:
                errors.append(str(err))
        self._skip(errors)
        if not images:
            _all_failed(errors)
        keep = torch.tensor(keep)
        return torch.stack(images), batch["labels"][keep], batch["ids"][keep]

    def __iter__(self):
        for batch in self._collated():
            self._skip(batch["errors"])
            if batch["images"] is None:
                _all_failed(batch["errors"])
            if batch["encoded"] is not None:
                images, labels, ids = self._on_device(batch)
            else:
                images, labels, ids = batch["images"], batch["labels"], batch["ids"]
            # a copy: the decode process writes a later batch into this one's buffer once we ask (batch_ring.py)
            images = normalize_batch(images.to(self.device, non_blocking=True), self.mean, self.std)
            labels = labels.to(self.device, non_blocking=True)
            yield (images, labels, ids) if self.with_ids else (images, labels)
