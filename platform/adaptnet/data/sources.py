"""The memory source: dataset specs → decoded uint8 image tensors, cached once per source (small same-size
sets such as CIFAR; everything else streams, see catalog.py and streaming.py).

A spec is one of:
  * `cifar10` / `cifar100`         torchvision's copy, downloaded into the cache root
  * a folder or `.tar.gz`/`.tgz`/`.tar` of an ImageFolder tree with `train/` and `test/` (or `val/`)
    sub-folders, one folder per class (labels = sorted class-folder names)
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
from .readers import IMAGE_SUFFIXES, fetch_s3, s3_cache_path  # noqa: F401 (s3_cache_path: re-exported)

TEST_SPLIT_NAMES = ("test", "val")


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
    key = source_key(local)
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


def _split_of(parts: tuple[str, ...]) -> tuple[str, str] | None:
    """('…', 'train', 'cat', 'x.jpg') → ('train', 'cat'); None for anything that is not an image."""
    if len(parts) < 3 or not parts[-1].lower().endswith(IMAGE_SUFFIXES):
        return None
    split, cls = parts[-3], parts[-2]
    if any(part in ("..", "") for part in parts) or parts[0] == "/":  # never trust an archive's member names
        return None
    if split == "train":
        return "train", cls
    if split in TEST_SPLIT_NAMES:
        return "test", cls
    return None


def _stack(spec: str, found: dict[str, list[tuple[str, bytes]]]) -> dict[str, ImageTensors]:
    missing = [s for s in ("train", "test") if not found.get(s)]
    if missing:
        raise DataError(f"data.dataset: {spec!r} has no images under a {'/'.join(missing)} split "
                        f"(expected train/<class>/*.jpg and test/<class>/*.jpg)")
    classes = sorted({cls for items in found.values() for cls, _, _ in items})
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for split, items in found.items():
        images, labels = [], []
        for cls, data, name in items:
            pixels = np.array(decode_rgb(data, f"{spec!r} member {name}"))
            images.append(torch.from_numpy(pixels).permute(2, 0, 1))
            labels.append(index[cls])
        sizes = {tuple(i.shape) for i in images}
        if len(sizes) != 1:
            raise DataError(f"data.dataset: {spec!r} {split} images differ in size ({len(sizes)} sizes); "
                            "the decoded-tensor cache needs one size: use data.loader: torch (streaming)")
        splits[split] = ImageTensors(torch.stack(images), torch.tensor(labels, dtype=torch.int64), classes)
    return splits


def _decode_archive(path: Path, spec: str) -> dict[str, ImageTensors]:
    found: dict[str, list[tuple[str, bytes, str]]] = {"train": [], "test": []}
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                where = _split_of(tuple(Path(member.name).parts)) if member.isfile() else None
                if where:
                    found[where[0]].append((where[1], tar.extractfile(member).read(), member.name))
    except (tarfile.TarError, OSError, EOFError) as err:
        reason = str(err).splitlines()[0].rstrip(":")
        raise DataError(f"data.dataset: cannot read archive {spec!r}: {reason}") from None
    for items in found.values():
        items.sort(key=lambda item: item[0])  # stable: keeps file order within a class
    return _stack(spec, found)


def _decode_folder(root: Path, spec: str) -> dict[str, ImageTensors]:
    found: dict[str, list[tuple[str, bytes, str]]] = {"train": [], "test": []}
    for path in sorted(root.rglob("*")):
        where = _split_of(path.relative_to(root).parts) if path.is_file() else None
        if where:
            found[where[0]].append((where[1], path.read_bytes(), str(path.relative_to(root))))
    return _stack(spec, found)


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
