"""The memory source: dataset specs → decoded uint8 image tensors, cached once per source (small same-size
sets such as CIFAR; everything else streams, see catalog.py and streaming.py).

A spec is one of:
  * `cifar10` / `cifar100`         torchvision's copy, downloaded into the cache root
  * a folder or `.tar.gz`/`.tgz`/`.tar` of an ImageFolder tree with `train/` and `val/` (or `test/`)
    sub-folders, one folder per class, read by the readers' rule (readers.py): the same files, labels and
    order as the streaming loaders
  * any of those archives or folders' archives at `s3://bucket/key` (boto3; the endpoint and keys come
    from the standard AWS environment variables, e.g. AWS_ENDPOINT_URL)

Decoding happens once: each split becomes `images` (N×3×H×W uint8) + `labels` in a `.pt` file under
the cache root, keyed by the source's identity (path, size, mtime / S3 ETag), and is memory-mapped when read
(pages are shared by every process on the node and loaded on first touch).
"""
from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .catalog import ARCHIVE_SUFFIXES, default_cache_root, source_key
from .decode import decode_rgb
from .errors import DataError
from .readers import FolderReader, Listing, fetch_s3, scan_archive

LISTING_RULE = 2  # in the cache key: caches decoded by an older reading of the tree are not reused


@dataclass
class ImageTensors:
    images: torch.Tensor   # N×3×H×W uint8
    labels: torch.Tensor   # N int64
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def load_splits(spec: str, cache_root: str | Path | None = None) -> dict[str, ImageTensors]:
    """Returns {"train": ..., "test": ...} for a dataset spec, decoding only on the first call."""
    cache = Path(cache_root) if cache_root else default_cache_root()
    name = spec.lower()
    if name in ("cifar10", "cifar100"):
        return _torchvision_cifar(name, cache)
    local = fetch_s3(spec, cache) if spec.startswith("s3://") else Path(spec).expanduser()
    if not local.exists():
        raise DataError(f"data.dataset: {spec!r} does not exist (expected cifar10, cifar100, an ImageFolder "
                        f"folder or .tar.gz, local or s3://)")
    key = source_key(local, LISTING_RULE)
    cached = cache / "decoded" / f"{key}.pt"
    if cached.exists():
        return _read_cache(cached)
    if local.is_dir():
        splits = _decode_folder(local, spec)
    elif local.name.endswith(ARCHIVE_SUFFIXES):
        splits = _decode_archive(local, spec)
    else:
        raise DataError(f"data.dataset: {spec!r} is neither a folder nor a .tar.gz/.tgz/.tar archive")
    _write_cache(cached, splits)
    return splits


def _read_cache(path: Path) -> dict[str, ImageTensors]:
    raw = torch.load(path, weights_only=True, mmap=True)
    return {split: ImageTensors(**fields) for split, fields in raw.items()}


def _write_cache(path: Path, splits: dict[str, ImageTensors]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({s: vars(t) for s, t in splits.items()}, tmp)
    tmp.replace(path)  # atomic: concurrent workers never read a half-written cache


def _decode(spec: str, listing: Listing, read) -> dict[str, ImageTensors]:
    """Every image of the listing decoded, in the listing's order (the streaming loaders' order and labels)."""
    splits = {}
    for split, (refs, labels) in listing.splits.items():
        images = [torch.from_numpy(np.array(decode_rgb(read(ref), f"{spec!r} member {ref}"))).permute(2, 0, 1)
                  for ref in refs]
        sizes = {tuple(i.shape) for i in images}
        if len(sizes) != 1:
            raise DataError(f"data.dataset: {spec!r} {split} images differ in size ({len(sizes)} sizes); "
                            "the decoded-tensor cache needs one size: use data.loader: torch (streaming)")
        splits[split] = ImageTensors(torch.stack(images), torch.from_numpy(labels), listing.classes)
    return splits


def _decode_archive(path: Path, spec: str) -> dict[str, ImageTensors]:
    """One pass over the archive (no unpacking): its listing, by the readers' rule, and every image's bytes."""
    payload: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:*") as tar:
            listing = scan_archive(tar, spec, lambda _, member: payload.__setitem__(member.name, tar.extractfile(member).read()))
    except (tarfile.TarError, OSError, EOFError) as err:
        reason = str(err).splitlines()[0].rstrip(":")
        raise DataError(f"data.dataset: cannot read archive {spec!r}: {reason}") from None
    return _decode(spec, listing, payload.pop)


def _decode_folder(root: Path, spec: str) -> dict[str, ImageTensors]:
    reader = FolderReader(root, spec)
    return _decode(spec, reader.listing(), reader.read)


def _torchvision_cifar(name: str, cache: Path) -> dict[str, ImageTensors]:
    cached = cache / "decoded" / f"{name}.pt"
    if cached.exists():
        return _read_cache(cached)
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    splits = {}
    for split, train in (("train", True), ("test", False)):
        try:
            ds = cls(str(cache / "torchvision"), train=train, download=True)
        except Exception as err:  # network or checksum failures surface as many types
            raise DataError(f"data.dataset: cannot download {name} into {cache}: {err}") from None
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        splits[split] = ImageTensors(images, torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes))
    _write_cache(cached, splits)
    return splits
