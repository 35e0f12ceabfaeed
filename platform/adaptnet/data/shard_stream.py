"""Sequential shard streaming (data.shard_reading: stream), the training split of tar shards read as
WebDataset-style readers do: whole shards front to back instead of one read per sample.

Every epoch draws a seeded shard order; the training samples laid out in that order (each shard's in file
order) are cut into equal contiguous stretches, one per rank (padded by wrapping, as `epoch_order`), so ranks
stay disjoint and equally long and every sample is seen once. A rank's stretch falls into runs that lie in one
shard each; the rank's decode processes take every n-th run, read it with one sequential read (one ranged GET
on S3), and mix what they read through a seeded shuffle buffer. Each sample's transform is seeded by
(seed, epoch, sample), as in the DataLoader twin, so the samples and their crops do not depend on the number of
decode processes; their order does (the runs are dealt to the processes).
"""
from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .errors import DataError
from .streaming import ImageFiles, epoch_generator, sample_seed


def epoch_runs(shard_of: np.ndarray, offset_of: np.ndarray, n_shards: int, seed: int, epoch: int, rank: int,
               world_size: int) -> list[np.ndarray]:
    """One rank's sample positions for one epoch, as runs lying in one shard each, in reading order."""
    shard_rank = torch.randperm(n_shards, generator=epoch_generator(seed, epoch)).argsort().numpy()
    order = np.lexsort((offset_of, shard_rank[shard_of]))  # by the epoch's shard order, then by offset
    per_rank = math.ceil(len(order) / world_size)
    total = per_rank * world_size
    if len(order) < total:
        order = np.concatenate([order, order[: total - len(order)]])
    mine = order[rank * per_rank:(rank + 1) * per_rank]
    cuts = np.flatnonzero((np.diff(shard_of[mine]) != 0) | (np.diff(offset_of[mine]) <= 0)) + 1
    return np.split(mine, cuts)


class ShardStream(IterableDataset):
    """One rank's training epoch of `files` (refs (shard, offset, size) of a ShardReader), streamed."""

    def __init__(self, files: ImageFiles, seed: int, rank: int, world_size: int, buffer: int):
        self.files, self.seed, self.rank, self.world_size, self.buffer = files, seed, rank, world_size, buffer
        refs = np.asarray(files.refs, dtype=np.int64).reshape(-1, 3)
        self.shard_of, self.offset_of = refs[:, 0], refs[:, 1]
        self.n_shards = len(files.reader.index["shards"])
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.files) / self.world_size)

    def _read(self, run: np.ndarray):
        """(position, bytes) of a run's samples, from one sequential read of its span of the shard."""
        refs = self.files.refs
        shard, start = int(refs[run[0]][0]), int(refs[run[0]][1])
        end = int(refs[run[-1]][1] + refs[run[-1]][2])
        with self.files.reader.open_span(shard, start, end) as span:
            at = start
            for i in run:
                offset, size = int(refs[i][1]), int(refs[i][2])
                span.read(offset - at)  # the tar headers (and samples of other splits) between two samples
                data = span.read(size)
                if len(data) != size:
                    raise DataError(f"data.dataset: shard {self.files.reader.index['shards'][shard]} is shorter "
                                    "than its index says")
                at = offset + size
                yield int(i), data

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        runs = epoch_runs(self.shard_of, self.offset_of, self.n_shards, self.seed, self.epoch, self.rank,
                          self.world_size)[worker::workers]
        mix = random.Random(sample_seed(self.seed, self.epoch, self.rank * 1_000 + worker))
        buffer: list[tuple[int, bytes]] = []
        for run in runs:
            for item in self._read(run):
                buffer.append(item)
                if len(buffer) >= self.buffer:
                    k = mix.randrange(len(buffer))
                    buffer[k], buffer[-1] = buffer[-1], buffer[k]
                    i, data = buffer.pop()
                    yield self.files.sample(self.epoch, i, data)
        mix.shuffle(buffer)
        for i, data in buffer:
            yield self.files.sample(self.epoch, i, data)
