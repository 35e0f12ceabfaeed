"""The Ray Data source (`data.loader: ray`): the driver decides the data plan once (`streaming_plan`: listing,
transform, normalisation, held-out split) and puts it in the object store; each Train worker turns it into its
batches exactly as the DataLoader twin does (`streamed`), with `RayBatches` in place of the DataLoader: every
epoch a Ray dataset of the rank's sample positions, read, decoded and transformed in Ray Data tasks (which may
run on CPU-only nodes), its blocks kept in order.

So a Ray Data epoch is the twin's epoch: the same seeded order (`epoch_order`: disjoint, equally long rank
strides, a new permutation every epoch), the same per-sample seeds and therefore the same crops, whatever the
number of tasks, and reproducible from the seed. Undecodable images are dropped in the tasks (one stderr line
each, or the run fails with data.bad_images: fail) and counted in the worker (`skipped`, logged as
data/skipped_images).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ...data import DataError, StreamingBatches, streamed, streaming_plan

ROWS_PER_TASK = 32  # images a Ray Data task decodes per call; blocks of 2 calls
MAX_BLOCKS = 256  # beyond, larger blocks: each is an object of its own (100k samples in 1,563 blocks: +4 s)


class DecodeSamples:
    """Ray Data batch function: sample positions of one epoch → (image, label, id) rows, through the rank's
    ImageFiles (decode + seeded transform, or bytes kept encoded for decoding on the GPU)."""

    def __init__(self, files, epoch: int, bad_images: str):
        self.files, self.epoch, self.bad_images = files, epoch, bad_images

    def __call__(self, batch: dict) -> dict:
        import sys

        rows = []
        for i in batch["i"]:
            item = self.files[(self.epoch, int(i))]
            if isinstance(item, str):
                if self.bad_images == "fail":
                    raise DataError(f"{item} (data.bad_images: fail)")
                sys.stderr.write(f"skipped: {item}\n")
                continue
            rows.append(item)
        encoded = self.files.transform is None
        if encoded or not rows:  # encoded bytes (and CPU-decoded odd formats) differ in length: object column
            column = np.empty(len(rows), dtype=object)
            column[:] = [r[0].numpy() for r in rows]
        else:  # N×H×W×C: the images' own memory layout, copied as it is (stack_images)
            column = np.stack([r[0].permute(1, 2, 0).numpy() for r in rows])
        return {"image": column, "label": np.array([r[1] for r in rows], np.int64),
                "id": np.array([r[2] for r in rows], np.int64),
                "encoded": np.array([bool(r[3]) if encoded else False for r in rows])}


class RayBatches(StreamingBatches):
    """StreamingBatches whose decode work runs in Ray Data tasks instead of DataLoader processes."""

    def _collated(self):
        import ray.data

        epoch = self.sampler.epoch
        order = np.fromiter((i for _, i in self.sampler), dtype=np.int64)
        blocks = np.array_split(order, max(1, min(math.ceil(len(order) / (2 * ROWS_PER_TASK)), MAX_BLOCKS)))
        ds = ray.data.from_numpy(blocks).rename_columns({"data": "i"})
        ds.context.execution_options.preserve_order = True  # the epoch's order, whatever task finishes first
        ds = ds.map_batches(DecodeSamples(self.files, epoch, self.bad_images), batch_size=ROWS_PER_TASK)
        received = 0
        for batch in ds.iter_batches(batch_size=self.batch_size, batch_format="numpy", prefetch_batches=2):
            received += len(batch["label"])
            yield self._as_collated(batch)
        self.skipped += len(order) - received  # dropped in the tasks, each named on their stderr

    def _as_collated(self, batch: dict) -> dict:
        encoded = bool(batch["encoded"].any()) or batch["image"].dtype == object
        images = ([torch.from_numpy(np.asarray(x)) for x in batch["image"]] if encoded
                  else torch.from_numpy(batch["image"].copy()).permute(0, 3, 1, 2))  # Ray hands read-only arrays
        return {"errors": [], "images": images if len(batch["label"]) else None,
                "labels": torch.from_numpy(batch["label"].copy()), "ids": torch.from_numpy(batch["id"].copy()),
                "encoded": list(batch["encoded"]) if encoded else None}


def driver_plan(cfg, decided) -> dict:
    """The Ray Data plan of a run (`decided`: its DataPlan), listed here on the driver and put in the object store
    for the workers."""
    import ray

    return {"plan": ray.put(streaming_plan(cfg.data, info=decided.info))}


def worker_data(meta: dict, rank: int, world_size: int, device, with_ids: bool = False):
    """The loop's `make_data` in a Train worker: the driver's plan through `streamed`, batches from Ray Data."""
    import ray

    plan = ray.get(meta["plan"])

    def make_data(data_cfg, batch_size, eval_batch_size, seed, saved_split=None, **_):
        if saved_split is not None and not all(torch.equal(torch.as_tensor(saved_split[k]), torch.as_tensor(plan.split[k]))
                                               for k in ("train", "holdout")):
            raise DataError("data.holdout: the run's saved split differs from the split the driver drew")
        return streamed(plan, data_cfg, batch_size, eval_batch_size, seed, rank, world_size, device,
                        batches_class=RayBatches, loader="ray", with_ids=with_ids)

    return make_data
