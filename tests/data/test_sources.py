import tarfile

import boto3
import pytest
import torch
from PIL import Image

from adaptnet.data import DataError, load_splits
from adaptnet.data.loader import CIFAR10_CLASSES
from adaptnet.data.readers import s3_cache_path


def test_real_cifar10_has_the_standard_counts_and_label_order(cifar10_spec):
    splits = load_splits(cifar10_spec)
    train, test = splits["train"], splits["test"]
    assert train.images.shape == (50_000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (10_000, 3, 32, 32)
    assert train.classes == CIFAR10_CLASSES
    assert train.labels.bincount().tolist() == [5000] * 10
    assert test.labels.bincount().tolist() == [1000] * 10


def _tiny_tree(root, images_per_class=3):
    """A real ImageFolder tree of JPEGs: train/ and test/, classes b, a (labels must sort: a=0, b=1)."""
    torch.manual_seed(0)
    for split in ("train", "test"):
        for cls in ("b", "a"):
            folder = root / "tiny" / split / cls
            folder.mkdir(parents=True)
            for i in range(images_per_class):
                pixels = torch.randint(0, 256, (8, 8, 3), dtype=torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=95)
    return root / "tiny"


def _tar(tree, target):
    with tarfile.open(target, "w:gz") as tar:
        tar.add(tree, arcname=tree.name)
    return target


def test_folder_and_archive_decode_to_the_same_cached_tensors(tmp_path):
    tree = _tiny_tree(tmp_path / "src")
    archive = _tar(tree, tmp_path / "tiny.tar.gz")
    cache = tmp_path / "cache"
    from_folder = load_splits(str(tree), cache)
    from_archive = load_splits(str(archive), cache)
    for split in ("train", "test"):
        assert from_folder[split].classes == ["a", "b"]
        assert from_folder[split].labels.tolist() == [0, 0, 0, 1, 1, 1]
        assert torch.equal(from_folder[split].images, from_archive[split].images)
    cached = sorted((cache / "decoded").glob("*.pt"))
    assert len(cached) == 2
    stamps = [p.stat().st_mtime_ns for p in cached]
    load_splits(str(archive), cache)  # second time: read from the cache, nothing re-decoded or rewritten
    assert [p.stat().st_mtime_ns for p in cached] == stamps


def test_s3_archive_is_downloaded_once_and_decoded(tmp_path, moto_server):
    archive = _tar(_tiny_tree(tmp_path / "src"), tmp_path / "tiny.tar.gz")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="datasets")
    s3.upload_file(str(archive), "datasets", "mirror/tiny.tar.gz")
    cache = tmp_path / "cache"
    splits = load_splits("s3://datasets/mirror/tiny.tar.gz", cache)
    assert splits["train"].images.shape == (6, 3, 8, 8)
    assert s3_cache_path(cache, "datasets", "mirror/tiny.tar.gz").read_bytes() == archive.read_bytes()
    with pytest.raises(DataError, match=r"^data\.dataset: cannot fetch 's3://datasets/missing.tar.gz'"):
        load_splits("s3://datasets/missing.tar.gz", cache)


@pytest.mark.parametrize("content,message", [
    (b"this is not a gzip archive", "cannot read archive"),
    (None, "does not exist"),
])
def test_missing_or_corrupt_dataset_is_one_clear_line(tmp_path, content, message):
    path = tmp_path / "broken.tar.gz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_splits(str(path), tmp_path / "cache")
    assert str(err.value).startswith("data.dataset:") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_archive_without_a_test_split_is_rejected(tmp_path):
    tree = _tiny_tree(tmp_path / "src")
    import shutil
    shutil.rmtree(tree / "test")
    with pytest.raises(DataError, match="no images under a test split"):
        load_splits(str(tree), tmp_path / "cache")


def test_archive_inspection_is_read_once_and_redone_when_the_archive_changes(tmp_path):
    import os

    from adaptnet.data import inspect_dataset

    archive = _tar(_tiny_tree(tmp_path / "src"), tmp_path / "tiny.tar.gz")
    cache = tmp_path / "cache"
    first = inspect_dataset(str(archive), cache)
    assert first.counts == {"train": 6, "test": 6} and first.classes == ["a", "b"]
    (written,) = (cache / "inspected").glob("*.json")
    stamp = written.stat().st_mtime_ns
    assert inspect_dataset(str(archive), cache) == first and written.stat().st_mtime_ns == stamp  # from the cache
    _tar(_tiny_tree(tmp_path / "other", images_per_class=2), archive)  # same path, new content
    os.utime(archive, ns=(stamp + 10**9, stamp + 10**9))
    assert inspect_dataset(str(archive), cache).counts == {"train": 4, "test": 4}
