"""A decode process's uint8 batches, written into a few shared-memory buffers that it reuses in turn.

In a DataLoader process, default_collate puts every batch in new shared memory, and the kernel hands out each
page of it zeroed, one page fault at a time: ≈ 37 faults per 224×224 image. On the ImageNet sample that cost
the decode process ≈ 7 % of its time (bench/data_throughput.py, interleaved runs: the twin went from 0.80× to
0.86× the raw decode rate with these buffers).

Why `prefetch + 1` buffers are never overwritten while in use: with a map-style dataset and in-order delivery
(StreamingBatches' train and evaluation loaders), the DataLoader gives a process its next task only when the
training process takes the next batch, and then that process holds at most `prefetch` tasks: the one being
written and the ones queued, beyond the batch being used. So the consumer must be done with a batch before it
asks for the next one; StreamingBatches is: it copies each batch (normalising it, or onto the device) first.
Shard streaming (an iterable dataset, regrouped chunks) keeps default_collate.
"""
from __future__ import annotations

import torch
from torch.utils.data import get_worker_info

from .transforms import stack_images


class BatchRing:
    """`stack(images)`: as `stack_images`, but in a DataLoader process, uint8 images of one size go into the
    next of `size` shared buffers (allocated on first use, and again for a larger batch or another size)."""

    def __init__(self, size: int):
        self.size = size
        self.buffers: list[torch.Tensor] = []  # each N×H×W×C
        self.turn = 0

    def stack(self, images: list[torch.Tensor]) -> torch.Tensor:
        c, h, w = images[0].shape
        if get_worker_info() is None or any(image.shape != (c, h, w) or image.dtype != torch.uint8 for image in images):
            return stack_images(images)
        if not self.buffers or self.buffers[0].shape[0] < len(images) or self.buffers[0].shape[1:] != (h, w, c):
            self.buffers = [torch.empty((len(images), h, w, c), dtype=torch.uint8).share_memory_()
                            for _ in range(self.size)]
        out = self.buffers[self.turn % self.size][:len(images)]
        self.turn += 1
        torch.stack([image.permute(1, 2, 0) for image in images], out=out)  # H×W×C memory, as stack_images
        return out.permute(0, 3, 1, 2)
