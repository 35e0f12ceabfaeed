"""The Ray Data source (`data.loader: ray`): datasets built on the driver, decoded and transformed in Ray Data
tasks (which may run on CPU-only nodes), read in each Train worker through `get_dataset_shard`.

The driver lists the files and draws the held-out split on that listing exactly as the DataLoader source does
(`adaptnet.data.make_split`), so both see the same images. Only `train` is split across workers
(`streaming_split(equal=True)` through Ray Train's DataConfig: equal row counts, so no rank stalls the others'
all-reduce); held-out and test reach every worker whole and rank 0 evaluates them. Each epoch is a new
execution of the plan, and `random_shuffle(seed)` reseeds per execution; the train batches are also shuffled
locally, seeded by (seed, epoch), so every epoch has a new order. Ray's
parallel tasks make that order, and which rank gets which rows, not bit-reproducible (the DataLoader source is).
"""
from __future__ import annotations

import json
import math
import sys

import numpy as np
import torch

from ...data import DataError, Prepared, eval_indices, make_split, streaming_plan
from ...data.decode import decode_tensor
from ...data.transforms import eval_size, eval_transform, normalize_batch, train_transform

TRAIN, HOLDOUT, TEST = "train", "holdout", "test"


class DecodeTransform:
    """Ray Data batch function: rows of (id, label, ref) → (image, label, id); undecodable images dropped
    (one line in the task's log each) or, with bad_images="fail", the run fails naming the file."""

    def __init__(self, reader, transform, bad_images: str):
        self.reader, self.transform, self.bad_images = reader, transform, bad_images

    def __call__(self, batch: dict) -> dict:
        images, labels, ids = [], [], []
        for ref, label, sample in zip(batch["ref"], batch["label"], batch["id"]):
            ref = json.loads(ref)
            ref = tuple(ref) if isinstance(ref, list) else ref
            try:
                image = decode_tensor(self.reader.read(ref), str(ref))
                try:
                    image = self.transform(image)
                except DataError as err:  # an image the transform cannot take (SameSize)
                    raise DataError(f"{ref}: {err}") from None
            except DataError as err:
                if self.bad_images == "fail":
                    raise
                sys.stderr.write(f"skipped: {err}\n")
                continue
            images.append(image.numpy())
            labels.append(int(label))
            ids.append(int(sample))
        if not images:
            return {"image": np.zeros((0, 3, 1, 1), np.uint8), "label": np.zeros(0, np.int64), "id": np.zeros(0, np.int64)}
        return {"image": np.stack(images), "label": np.array(labels), "id": np.array(ids)}


def eval_name(split: str, rank: int) -> str:
    return f"{split}_rank{rank}"


def build_datasets(cfg, workers: int = 1) -> tuple[dict, dict]:
    """(Ray datasets, what every worker needs to know about them) for one run config: `train` (split across
    the workers by Ray Train) and, per rank, its shard of the held-out and test splits (every `workers`-th
    image from the rank's own: evaluation is spread over the workers, no image twice)."""
    import ray.data

    d = cfg.data
    reader, listing, kind, mean, std, side = streaming_plan(d)
    split = make_split(listing.count("train"), d, None)
    train_tf, eval_tf = train_transform(kind, d.augment, mean, std, side), eval_transform(kind, d.augment, mean, std, side)

    def dataset(split_name: str, idx: torch.Tensor, transform, train_mode: bool):
        refs, labels = listing.splits[split_name]
        rows = [{"id": i, "label": int(labels[i]), "ref": json.dumps(refs[i])} for i in idx.tolist()]
        ds = ray.data.from_items(rows, override_num_blocks=max(1, min(200, len(rows) // 256)))  # tasks of ≥ 256 images
        if train_mode:
            if d.augment.repeated_augment > 1:  # each image k times, the copies spread over ranks by the shuffle
                k = d.augment.repeated_augment
                ds = ds.flat_map(lambda row: [row] * k).random_shuffle(seed=cfg.train.seed).limit(len(rows))
            else:
                ds = ds.random_shuffle(seed=cfg.train.seed)  # reseeded per execution: every epoch a new order
        return ds.map_batches(DecodeTransform(reader, transform, d.bad_images), batch_size=64)

    holdout_tf = train_tf if d.holdout_transform == "train" else eval_tf
    evaluated = {TEST: ("test", eval_indices(listing.count("test"), d), eval_tf), HOLDOUT: ("train", split["holdout"], holdout_tf)}
    datasets, counts = {TRAIN: dataset("train", split["train"], train_tf, True)}, {TRAIN: len(split["train"])}
    for name, (source, idx, transform) in evaluated.items():
        for rank in range(workers if len(idx) else 0):
            shard = idx[rank::workers]
            datasets[eval_name(name, rank)] = dataset(source, shard, transform, False)
            counts[eval_name(name, rank)] = len(shard)
        counts[name] = len(idx)
    meta = {"split": split, "classes": listing.classes, "image_size": eval_size(kind, d.augment, side),
            "mean": mean, "std": std, "transform": kind, "counts": counts}
    return datasets, meta


class RayBatches:
    """A worker's batches of one Ray dataset (its train shard, or its rank's shard of an evaluation split)."""

    def __init__(self, iterator, rows: int, batch_size: int, device, mean, std, with_ids: bool = False,
                 shuffle_seed: int | None = None):
        self.iterator, self.rows, self.batch_size, self.device, self.with_ids = iterator, rows, batch_size, device, with_ids
        self.mean, self.std = mean, std
        self.shuffle_seed, self.epoch = shuffle_seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.rows / self.batch_size)

    def __iter__(self):
        # Training batches are also shuffled locally, seeded by (seed, epoch): each epoch a new order even when Ray
        # replays the global shuffle's order (it reseeds per execution, but not always: a flaky test showed it).
        local = {} if self.shuffle_seed is None else {"local_shuffle_buffer_size": 2 * self.batch_size,
                                                      "local_shuffle_seed": self.shuffle_seed * 1_000_003 + self.epoch}
        for batch in self.iterator.iter_torch_batches(batch_size=self.batch_size, device=self.device,
                                                      prefetch_batches=2, **local):
            images, labels = normalize_batch(batch["image"], self.mean, self.std), batch["label"]
            yield (images, labels, batch["id"]) if self.with_ids else (images, labels)


def worker_data(meta: dict, rank: int, world_size: int, device, with_ids: bool = False):
    """The loop's `make_data` in a Train worker: the same Prepared as prepare_data, from the dataset shards."""
    import ray.train

    def make_data(data_cfg, batch_size, eval_batch_size, seed, saved_split=None, **_):
        if saved_split is not None and not all(torch.equal(torch.as_tensor(saved_split[k]), torch.as_tensor(meta["split"][k]))
                                               for k in ("train", "holdout")):
            raise DataError("data.holdout: the run's saved split differs from the split the driver drew")
        counts = meta["counts"]

        def batches(name: str, bs: int, rows: int):
            return RayBatches(ray.train.get_dataset_shard(name), rows, bs, device, meta["mean"], meta["std"], with_ids,
                              shuffle_seed=seed if name == TRAIN else None)

        holdout, test = eval_name(HOLDOUT, rank), eval_name(TEST, rank)
        return Prepared(
            train=batches(TRAIN, batch_size, counts[TRAIN] // world_size),  # equal split: the remainder is dropped
            holdout=batches(holdout, eval_batch_size, counts[holdout]) if counts[HOLDOUT] else None,
            test=batches(test, eval_batch_size, counts[test]), classes=meta["classes"], split=meta["split"],
            image_size=meta["image_size"], loader="ray", transform=meta["transform"])

    return make_data


def data_config():
    """Only `train` is split across workers by Ray; each rank reads only its own evaluation datasets."""
    import ray.train

    return ray.train.DataConfig(datasets_to_split=[TRAIN])
