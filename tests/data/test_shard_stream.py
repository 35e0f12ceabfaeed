"""Sequential shard streaming of the training split: ranks disjoint, equally long and covering the epoch, a
new shard order each epoch, the same samples and crops for any number of decode processes, one GET per shard
on a real S3 server (against one per sample for random reads), and shards that WebDataset readers read."""
import io
import tarfile

import boto3
import numpy as np
import pytest
import torch
from PIL import Image

from adaptnet.data import prepare_data
from adaptnet.data import readers as readers_module
from adaptnet.data.rebatch import rebatch
from adaptnet.data.shard_stream import epoch_runs
from adaptnet.data.shards import write_shards
from adaptnet.loop.config import AugmentConfig, DataConfig

SMALL = AugmentConfig(train_crop=16, eval_resize=20, eval_crop=16)


@pytest.fixture
def shards(tmp_path):
    """A tree of 2 classes × 13 training JPEGs of mixed sizes (and 2 × 2 for val/), in shards of 4 samples."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 13), ("val", 2)):
        for c in ("a", "b"):
            (tmp_path / "tree" / split / c).mkdir(parents=True)
            for i in range(n):
                w, h = (20 + i, 18) if i % 2 else (18, 24)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / "tree" / split / c / f"{i}.jpg")
    write_shards(str(tmp_path / "tree"), str(tmp_path / "shards"), shard_size=4)
    return tmp_path / "shards"


def _epoch(spec, epoch, rank=0, world_size=1, workers=0, seed=0, reading="stream", holdout=2):
    cfg = DataConfig(dataset=str(spec), holdout=holdout, augment=SMALL, workers=workers, shard_reading=reading,
                     shuffle_buffer=3, normalization="imagenet")  # (computed stats would read images to plan)
    data = prepare_data(cfg, 4, 4, seed=seed, rank=rank, world_size=world_size)
    data.train.with_ids = True
    data.train.set_epoch(epoch)
    batches = list(data.train)
    assert len(batches) == len(data.train)  # every rank the same number of batches
    ids = torch.cat([i for _, _, i in batches]).tolist()
    return ids, dict(zip(ids, torch.cat([x for x, _, _ in batches])))


def test_ranks_stream_disjoint_equal_stretches_of_every_epoch(shards):
    (ids0, _), (ids1, _) = _epoch(shards, 0, 0, 2), _epoch(shards, 0, 1, 2)
    assert len(ids0) == len(ids1) == 12 and set(ids0).isdisjoint(ids1) and sorted(ids0 + ids1) == list(range(24))
    assert _epoch(shards, 1, 0, 2)[0] != ids0 and _epoch(shards, 0, 0, 2)[0] == ids0  # new each epoch; seeded
    odd_ids, _ = _epoch(shards, 0, 0, 2, holdout=3)  # 23 images: the last stretch wraps, as DistributedSampler
    assert len(odd_ids) == 12


def test_samples_and_crops_do_not_depend_on_the_decode_processes(shards):
    ids, images = _epoch(shards, 1)
    ids2, images2 = _epoch(shards, 1, workers=2)
    assert sorted(ids) == sorted(ids2) == list(range(24))
    assert all(torch.equal(images[i], images2[i]) for i in ids)
    _, randomly = _epoch(shards, 1, reading="random")  # per-sample seeds: the random-read path crops alike
    assert all(torch.equal(images[i], randomly[i]) for i in ids)


def test_runs_follow_a_seeded_shard_order_and_stay_in_one_shard():
    shard_of = np.repeat(np.arange(5), 4)
    offset_of = np.tile(np.arange(4) * 1000, 5)
    runs = epoch_runs(shard_of, offset_of, 5, seed=0, epoch=0, rank=0, world_size=1)
    assert len(runs) == 5 and all(len(set(shard_of[r])) == 1 and list(offset_of[r]) == sorted(offset_of[r]) for r in runs)
    order = [int(shard_of[r[0]]) for r in runs]
    assert sorted(order) == list(range(5))
    assert order != [int(shard_of[r[0]]) for r in epoch_runs(shard_of, offset_of, 5, 0, 1, 0, 1)]


def test_one_get_per_shard_on_s3(shards, moto_server, monkeypatch):
    boto3.client("s3").create_bucket(Bucket="stream")
    s3 = boto3.client("s3")
    for path in sorted(shards.iterdir()):
        s3.upload_file(str(path), "stream", f"set/{path.name}")
    gets = []

    def counting_client():
        client = boto3.client("s3")
        client.meta.events.register("before-parameter-build.s3.GetObject", lambda params, **_: gets.append(params["Key"]))
        return client

    monkeypatch.setattr(readers_module, "s3_client", counting_client)
    streamed, _ = _epoch("s3://stream/set", 0, holdout=0)
    train_shards = {f"set/train-{i:05d}.tar" for i in range(7)}  # 26 training images in shards of 4
    train_gets = [k for k in gets if k in train_shards]
    assert sorted(streamed) == list(range(26)) and sorted(train_gets) == sorted(train_shards)  # one GET each
    gets.clear()
    _epoch("s3://stream/set", 0, holdout=0, reading="random")
    assert len([k for k in gets if k in train_shards]) == 26  # one ranged GET per sample


def test_rebatch_gives_exact_batches_counting_failed_samples():
    def chunk(ids, errors=()):
        return {"errors": list(errors), "images": torch.zeros(len(ids), 1) + torch.tensor(ids)[:, None] if ids else None,
                "labels": torch.tensor(ids), "ids": torch.tensor(ids), "encoded": None}

    chunks = [chunk([0, 1, 2]), chunk([3], ["bad"]), chunk([4, 5, 6]), chunk([7])]
    batches = list(rebatch(iter(chunks), 3))
    assert [b["ids"].tolist() for b in batches] == [[0, 1, 2], [3, 4], [5, 6, 7]]  # 3 samples each, good or not
    assert [b["errors"] for b in batches] == [[], ["bad"], []]
    assert [b["ids"].tolist() for b in rebatch(iter(chunks), 5)] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_webdataset_reads_our_shards(shards):
    import webdataset as wds

    with tarfile.open(shards / "train-00000.tar") as tar:
        names = tar.getnames()
    assert names[:2] == ["train00000000.jpg", "train00000000.cls"]
    samples = list(wds.WebDataset(str(shards / "train-00000.tar"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"train{i:08d}" for i in range(4)]
    assert all(int(s["cls"]) == 0 for s in samples)
    Image.open(io.BytesIO(samples[0]["jpg"])).verify()


def test_the_compact_index_and_the_older_json_one_list_alike(shards):
    import json

    from adaptnet.data.catalog import open_reader

    compact = open_reader(str(shards)).listing()
    index = json.loads((shards / "index.json").read_text())
    assert index["format"] == "adaptnet-shards/2" and index["splits"]["train"]["samples"] == "samples-train.npy"
    for table in index["splits"].values():  # adaptnet-shards/1: the sample rows inside index.json
        table["samples"] = np.load(shards / table["samples"]).tolist()
    (shards / "index.json").write_text(json.dumps({**index, "format": "adaptnet-shards/1"}))
    older = open_reader(str(shards)).listing()
    for split in ("train", "test"):
        assert np.array_equal(older.splits[split][0], compact.splits[split][0])
        assert np.array_equal(older.splits[split][1], compact.splits[split][1])
    assert older.classes == compact.classes == ["a", "b"]
