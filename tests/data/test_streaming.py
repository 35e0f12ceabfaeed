"""The streaming sources on real files: the ImageNet sample (mixed sizes, greyscale) through the DataLoader
twin with the reference transforms, rank sharding by sample id, tar shards (local and on a real S3 server),
and bad datasets as one line."""
import io
import json
import shutil

import boto3
import numpy as np
import pytest
import torch
from PIL import Image

from adaptnet.data import DataError, inspect_dataset, prepare_data
from adaptnet.data.catalog import open_reader
from adaptnet.data.shards import write_shards
from adaptnet.data.streaming import ImageFiles, StreamingBatches
from adaptnet.data.transforms import train_transform
from adaptnet.loop.config import AugmentConfig, DataConfig

SMALL = AugmentConfig(train_crop=48, eval_resize=56, eval_crop=48)


def _tree(root, sizes=((8, 8), (12, 9), (20, 14)), per_class=4, classes=("b", "a")):
    """A real ImageFolder of JPEGs of mixed sizes: train/ and val/, classes sorted a=0, b=1."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                w, h = sizes[i % len(sizes)]
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / split / c / f"{i}.jpg")
    return root


def test_imagenet_sample_streams_with_the_reference_transforms(imagenet_tree):
    info = inspect_dataset(str(imagenet_tree))
    assert len(info.classes) == 1000 and info.counts == {"train": 1000, "test": 1000} and not info.one_size
    cfg = DataConfig(dataset=str(imagenet_tree), holdout=100, loader="auto", augment=SMALL, workers=2)
    data = prepare_data(cfg, 64, 100, seed=0)
    assert data.loader == "torch" and data.transform == "imagenet" and data.num_classes == 1000
    assert len(data.train) == 15 and data.image_size == 48
    images, labels = next(iter(data.train))
    assert images.shape == (64, 3, 48, 48) and images.dtype == torch.float32
    assert -2.2 < float(images.min()) < 0 < float(images.max()) < 2.7  # ImageNet-normalised
    assert labels.min() >= 0 and labels.max() < 1000
    test_images, test_labels = next(iter(data.test))
    assert test_images.shape == (100, 3, 48, 48)
    assert test_labels.tolist() == list(range(100))  # val/ in class order; greyscale images came out RGB


def test_ranks_get_disjoint_shards_whose_union_is_the_epoch_reproducibly(tmp_path):
    tree = _tree(tmp_path / "tree", per_class=11)  # 22 images: 2 ranks × 11
    reader = open_reader(str(tree))
    refs, labels = reader.listing().splits["train"]
    transform = train_transform("imagenet", SMALL, (0.5,) * 3, (0.25,) * 3)

    def epoch(e, rank, workers=0, seed=1):
        batches = StreamingBatches(ImageFiles(reader, refs, labels, transform, seed), 4, shuffle=True, seed=seed,
                                   rank=rank, world_size=2, workers=workers, with_ids=True)
        batches.set_epoch(e)
        out = list(batches)
        return torch.cat([ids for _, _, ids in out]).tolist(), torch.cat([x for x, _, _ in out])

    (ids0, x0), (ids1, _) = epoch(0, 0), epoch(0, 1)
    assert set(ids0).isdisjoint(ids1) and sorted(ids0 + ids1) == list(range(22))
    assert epoch(1, 0)[0] != ids0                       # a new order every epoch
    again_ids, again_x = epoch(0, 0, workers=2)          # the same seed: the same samples, crops and flips,
    assert again_ids == ids0 and torch.equal(again_x, x0)  # whatever the number of loader processes
    assert epoch(0, 0, seed=2)[0] != ids0


def test_decode_processes_reuse_prefetch_plus_one_batch_buffers_and_never_overwrite_one_in_use(tmp_path):
    """A decode process writes its uint8 batches into prefetch + 1 shared buffers in turn (batch_ring.py): a
    consumer that holds each batch while the processes run as far ahead as they may still reads its own
    pixels, and the epoch's batches lie in that many buffers per process."""
    import os
    import time

    tree = _tree(tmp_path / "tree", per_class=24)  # 48 images: 12 batches, 6 per process
    reader = open_reader(str(tree))
    refs, labels = reader.listing().splits["train"]
    transform = train_transform("imagenet", SMALL, (0.5,) * 3, (0.25,) * 3)

    def batches(workers):
        files = ImageFiles(reader, refs, labels, transform, seed=3)
        return StreamingBatches(files, 4, shuffle=True, seed=3, workers=workers, prefetch=2)._collated()

    expected = {i: image.clone() for batch in batches(0) for image, i in zip(batch["images"], batch["ids"].tolist())}
    buffers = set()
    for batch in batches(2):
        time.sleep(0.15)  # a training step's time: meanwhile both processes write every batch they may
        for image, i in zip(batch["images"], batch["ids"].tolist()):
            assert torch.equal(image, expected[i]), f"sample {i} was overwritten"
        buffers.add(os.fstat(batch["images"].untyped_storage()._share_fd_cpu_()[0]).st_ino)
    assert len(buffers) == 2 * 3


def test_a_ranks_file_names_travel_packed_and_read_back_as_listed():
    """Every Ray Data task unpickles its rank's files (and every decode process once): their names travel as two
    arrays, not as a string per sample, and read back exactly, non-ASCII ones too."""
    import pickle
    import sys

    refs = [f"train/c{i % 7}/é{i}.jpg" for i in range(50_000)]
    data = pickle.dumps(ImageFiles(None, refs, np.zeros(len(refs), np.int64), None, seed=0), protocol=5)
    blocks = sys.getallocatedblocks()
    files = pickle.loads(data)
    assert sys.getallocatedblocks() - blocks < 1_000  # as a list: one block per name
    assert len(files) == len(refs) and files.refs[-1] == refs[-1] and list(files.refs) == refs


def test_shards_local_and_on_s3_read_back_the_folder_and_are_inspected_from_the_index(tmp_path, moto_server):
    tree = _tree(tmp_path / "tree")
    index = write_shards(str(tree), str(tmp_path / "shards"), shard_size=3)
    assert len(index["shards"]) == 6 and {s: t["count"] for s, t in index["splits"].items()} == {"train": 8, "test": 8}
    folder, shards = open_reader(str(tree)), open_reader(str(tmp_path / "shards"))
    f_list, s_list = folder.listing(), shards.listing()
    assert s_list.classes == f_list.classes == ["a", "b"]
    for split in ("train", "test"):
        assert s_list.splits[split][1].tolist() == f_list.splits[split][1].tolist()
        assert [shards.read(r) for r in s_list.splits[split][0]] == [folder.read(r) for r in f_list.splits[split][0]]
    info = inspect_dataset(str(tmp_path / "shards"))
    assert info.format == "shards" and info.counts == {"train": 8, "test": 8}
    assert info.sizes["train"]["max"] == "20×14" and not info.one_size

    boto3.client("s3").create_bucket(Bucket="shards")
    write_shards(str(tree), "s3://shards/tiny", shard_size=3)
    remote = open_reader("s3://shards/tiny")
    r_list = remote.listing()
    assert [remote.read(r) for r in r_list.splits["train"][0]] == [folder.read(r) for r in f_list.splits["train"][0]]
    cfg = DataConfig(dataset="s3://shards/tiny", holdout=2, augment=SMALL, workers=0)
    data = prepare_data(cfg, 3, 8, seed=0)
    assert data.loader == "torch" and sum(len(y) for _, y in data.train) == 6


def test_s3_imagefolder_prefix_streams(tmp_path, moto_server):
    tree = _tree(tmp_path / "tree")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="folders")
    for path in tree.rglob("*.jpg"):
        s3.upload_file(str(path), "folders", f"imgs/{path.relative_to(tree)}")
    info = inspect_dataset("s3://folders/imgs")
    assert info.format == "s3-folder" and info.counts == {"train": 8, "test": 8}
    data = prepare_data(DataConfig(dataset="s3://folders/imgs", holdout=0, augment=SMALL, workers=0), 4, 8, seed=0)
    assert sum(len(y) for _, y in data.test) == 8


def _jpeg(size=(10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("breakage,message", [
    ("no_val", "has no images under a test split"),
    ("empty_class", "class folder train/c has no images"),
    ("shards_without_index", "holds tar shards but no index.json"),
    ("bomb", "decompression-bomb limit"),
])
def test_bad_datasets_are_one_line(tmp_path, breakage, message):
    tree = _tree(tmp_path / "tree")
    if breakage == "no_val":
        shutil.rmtree(tree / "val")
    elif breakage == "empty_class":
        (tree / "train" / "c").mkdir()
    elif breakage == "shards_without_index":
        write_shards(str(tree), str(tmp_path / "shards"), shard_size=4)
        (tmp_path / "shards" / "index.json").unlink()
        tree = tmp_path / "shards"
    elif breakage == "bomb":  # a real PNG whose header claims 20000×20000 pixels
        Image.new("1", (20000, 20000)).save(tree / "train" / "a" / "0.jpg", format="PNG")
    with pytest.raises(DataError) as err:
        data = prepare_data(DataConfig(dataset=str(tree), holdout=0, augment=SMALL, workers=0, bad_images="fail",
                                       loader="torch"), 16, 16, seed=0)
        list(data.train)
    assert str(err.value).startswith("data.dataset:") and message in str(err.value) and "\n" not in str(err.value)


def test_truncated_jpeg_is_skipped_and_counted_or_fails_in_one_line(tmp_path):
    tree = _tree(tmp_path / "tree")
    (tree / "train" / "a" / "1.jpg").write_bytes(_jpeg()[:200])  # truncated mid-scan
    skip = prepare_data(DataConfig(dataset=str(tree), holdout=0, augment=SMALL, workers=0), 16, 16, seed=0)
    assert sum(len(y) for _, y in skip.train) == 7 and skip.train.skipped == 1
    fail = prepare_data(DataConfig(dataset=str(tree), holdout=0, augment=SMALL, workers=0, bad_images="fail"),
                        16, 16, seed=0)
    with pytest.raises(DataError, match=r"train/a/1\.jpg cannot be decoded .*\(data\.bad_images: fail\)$"):
        list(fail.train)


def test_held_out_split_is_drawn_on_the_file_list(tmp_path):
    tree = _tree(tmp_path / "tree", per_class=10)
    cfg = DataConfig(dataset=str(tree), holdout=5, holdout_seed=3, augment=SMALL, workers=0, loader="torch")
    first, again = prepare_data(cfg, 4, 4, seed=0), prepare_data(cfg, 4, 4, seed=9)
    assert torch.equal(first.split["holdout"], again.split["holdout"]) and len(first.split["holdout"]) == 5
    held = sorted(torch.cat([y for _, y in first.holdout]).tolist())
    assert held == sorted(torch.tensor([0] * 10 + [1] * 10)[first.split["holdout"]].tolist())
    assert json.dumps(sorted(first.split["train"].tolist() + first.split["holdout"].tolist())) == json.dumps(list(range(20)))


def test_normalize_batch_equals_per_image_normalize_and_makes_its_stats_once_per_device():
    from torchvision.transforms import v2

    from adaptnet.data.transforms import _scaled_stats, normalize_batch

    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    expected = v2.Normalize(mean, std)(images.float() / 255)
    assert torch.allclose(normalize_batch(images, mean, std), expected, atol=1e-5)
    made = _scaled_stats.cache_info().misses
    for _ in range(3):  # every later batch reuses the device's tensors
        normalize_batch(images, list(mean), list(std))
    assert _scaled_stats.cache_info().misses == made


def test_decode_processes_default_to_the_ranks_cpus_less_one_for_training():
    from adaptnet.data.plan import MAX_DECODE_WORKERS, decode_workers

    assert [decode_workers(None, cpus) for cpus in (1, 2, 8, 64)] == [0, 1, 7, MAX_DECODE_WORKERS]
    assert decode_workers(3, 8) == 3 and decode_workers(0, 8) == 0  # a set value is kept
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(5)  # what a Ray worker sets from its reserved CPUs
        assert decode_workers(None) == 4
    finally:
        torch.set_num_threads(threads)


class _ParentMaps(torch.utils.data.Dataset):
    """Each item: whether the decode process's parent (the forkserver it forked from) has torch loaded."""

    def __len__(self):
        return 2

    def __getitem__(self, i):
        import os
        from pathlib import Path

        return "libtorch_cpu" in Path(f"/proc/{os.getppid()}/maps").read_text()


def test_decode_processes_fork_from_a_server_that_imported_torch_once():
    """Every evaluation starts new decode processes: forked from a forkserver that preloaded torch and the
    streaming module, they skip ≈ 2 s of imports each (Linux: the server's memory maps name libtorch)."""
    from pathlib import Path

    from torch.utils.data import DataLoader

    from adaptnet.data.streaming import decode_processes

    if not Path("/proc/self/maps").exists():
        pytest.skip("reads /proc")
    loader = DataLoader(_ParentMaps(), batch_size=1, num_workers=1, multiprocessing_context=decode_processes())
    assert [bool(b) for b in loader] == [True, True]
