"""Readers: one per storage format (as timm's `data/readers`), each listing a dataset's samples and
returning any sample's encoded bytes by reference, so loaders can read in any order with bounded memory.

  FolderReader   an ImageFolder tree on local disk: train/<class>/*.jpg and val/ (or test/)
  S3FolderReader the same tree under s3://bucket/prefix (one listing, then one GET per sample)
  ShardReader    tar shards plus `index.json` (`adaptnet data shard`), local or s3://; a sample is a byte
                 range of one shard (seek locally, a ranged GET on S3), so nothing is listed or unpacked; the
                 training split streams whole shards (`open_span`, shard_stream.py)

A listing is `{split: (refs, labels)}` with refs in a fixed order (class, then path), so a held-out split
drawn on indices means the same files in every loader and on every node.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLIT_FOLDERS = ("train", "val", "test")  # the evaluation split is val/ when there is one, else test/
INDEX_FILE = "index.json"
SHARD_FORMAT = "adaptnet-shards/2"  # /1 held the sample rows in index.json; still read
SAMPLES_FILE = "samples-{split}.npy"


@dataclass
class Listing:
    classes: list[str]
    splits: dict[str, tuple[list, np.ndarray]]   # split → (refs, int64 labels)

    def count(self, split: str) -> int:
        return len(self.splits[split][1])


def split_and_class(parts: tuple[str, ...]) -> tuple[str, str] | None:
    """('train', 'cat', 'x.jpg') → ('train', 'cat'); None for anything that is not an image in a split folder."""
    if len(parts) != 3 or not parts[-1].lower().endswith(IMAGE_SUFFIXES) or parts[0] not in SPLIT_FOLDERS:
        return None
    return parts[0], parts[1]


def listing_from_paths(spec: str, found: dict[str, list[tuple[str, str]]], class_folders: set[str]) -> Listing:
    """(split folder → [(class, ref)]) → a Listing; every class folder must hold training images."""
    found = {"train": found.get("train", []), "test": found.get("val") or found.get("test", [])}
    missing = [s for s in ("train", "test") if not found[s]]
    if missing:
        raise DataError(f"data.dataset: {spec!r} has no images under a {'/'.join(missing)} split "
                        f"(expected train/<class>/*.jpg and val/<class>/*.jpg or test/<class>/*.jpg)")
    classes = sorted({cls for cls, _ in found["train"]})
    empty = sorted(class_folders - set(classes))
    if empty:
        raise DataError(f"data.dataset: {spec!r} class folder train/{empty[0]} has no images"
                        + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""))
    unknown = sorted({cls for cls, _ in found["test"]} - set(classes))
    if unknown:
        raise DataError(f"data.dataset: {spec!r} evaluation class {unknown[0]!r} has no training images")
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for split in ("train", "test"):
        items = sorted(found[split], key=lambda item: (index[item[0]], item[1]))
        splits[split] = ([ref for _, ref in items], np.array([index[c] for c, _ in items], dtype=np.int64))
    return Listing(classes, splits)


def scan_archive(tar, spec: str, on_image=None) -> Listing:
    """One pass over an ImageFolder archive's members, by the same rule as every reader (one top-level folder
    allowed; absolute and `..` names are never images): its Listing, refs being member names.
    `on_image(split_folder, member)` sees each image member as it passes (for its bytes or header)."""
    found: dict[str, list[tuple[str, str]]] = {}
    class_folders: set[str] = set()
    for member in tar:
        parts = PurePosixPath(member.name).parts
        if member.name.startswith("/") or ".." in parts:
            continue
        parts = parts[1:] if len(parts) == 4 else parts
        if member.isdir() and len(parts) == 2 and parts[0] == "train":
            class_folders.add(parts[1])
        where = split_and_class(parts) if member.isfile() else None
        if where:
            found.setdefault(parts[0], []).append((where[1], member.name))
            if on_image:
                on_image(parts[0], member)
    return listing_from_paths(spec, found, class_folders | {c for c, _ in found.get("train", [])})


class FolderReader:
    def __init__(self, root: Path, spec: str):
        self.root, self.spec = root, spec

    def listing(self) -> Listing:
        found: dict[str, list[tuple[str, str]]] = {name: [] for name in SPLIT_FOLDERS}
        class_folders: set[str] = set()
        for split_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name in SPLIT_FOLDERS):
            for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                if split_dir.name == "train":
                    class_folders.add(class_dir.name)
                for entry in os.scandir(class_dir):
                    where = split_and_class((split_dir.name, class_dir.name, entry.name))
                    if where and entry.is_file():
                        found[where[0]].append((where[1], f"{split_dir.name}/{class_dir.name}/{entry.name}"))
        return listing_from_paths(self.spec, found, class_folders)

    def read(self, ref: str) -> bytes:
        return (self.root / ref).read_bytes()

    @staticmethod
    def describe(ref: str) -> str:
        return ref


def s3_client():
    """A boto3 client for this process (endpoint and keys from the standard AWS_* variables)."""
    import boto3

    return boto3.client("s3")


def parse_s3(uri: str, field: str = "data.dataset") -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise DataError(f"{field}: {uri!r} is not of the form s3://bucket/prefix")
    return bucket, key.strip("/")


class _S3Base:
    """Holds bucket and prefix; the client is made lazily per process (loader workers are new processes)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.bucket, self.prefix = parse_s3(uri)
        self._client, self._pid = None, None

    @property
    def client(self):
        if self._client is None or self._pid != os.getpid():
            self._client, self._pid = s3_client(), os.getpid()
        return self._client

    def __getstate__(self):
        return {**self.__dict__, "_client": None, "_pid": None}

    def _key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def get(self, relative: str, byte_range: tuple[int, int] | None = None, stream: bool = False):
        """The object's bytes (`byte_range`: offset, size), or with `stream` its body to read front to back."""
        from botocore.exceptions import BotoCoreError, ClientError

        extra = {"Range": f"bytes={byte_range[0]}-{byte_range[0] + byte_range[1] - 1}"} if byte_range else {}
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(relative), **extra)["Body"]
            return body if stream else body.read()
        except (BotoCoreError, ClientError) as err:
            raise DataError(f"data.dataset: cannot read s3://{self.bucket}/{self._key(relative)}: {err}") from None


class S3FolderReader(_S3Base):
    def listing(self) -> Listing:
        from botocore.exceptions import BotoCoreError, ClientError

        found: dict[str, list[tuple[str, str]]] = {name: [] for name in SPLIT_FOLDERS}
        class_folders: set[str] = set()
        start = f"{self.prefix}/" if self.prefix else ""
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
                for obj in page.get("Contents", []):
                    relative = obj["Key"][len(start):]
                    parts = PurePosixPath(relative).parts
                    if len(parts) == 3 and parts[0] == "train":
                        class_folders.add(parts[1])
                    where = split_and_class(parts)
                    if where:
                        found[where[0]].append((where[1], relative))
        except (BotoCoreError, ClientError) as err:
            raise DataError(f"data.dataset: cannot list {self.uri!r}: {err}") from None
        return listing_from_paths(self.uri, found, class_folders)

    def read(self, ref: str) -> bytes:
        return self.get(ref)

    @staticmethod
    def describe(ref: str) -> str:
        return ref


class ShardReader:
    """Tar shards with an index: `index.json` (classes, shards, per-split counts and sample tables)."""

    def __init__(self, location: str, spec: str):
        self.spec = spec
        self.s3 = _S3Base(location) if location.startswith("s3://") else None
        self.root = None if self.s3 else Path(location)
        self._files: dict[int, object] = {}
        raw = self._read_file(INDEX_FILE)
        try:
            self.index = json.loads(raw)
            assert self.index.get("format") in (SHARD_FORMAT, "adaptnet-shards/1")
        except (ValueError, AssertionError):
            raise DataError(f"data.dataset: {spec!r} {INDEX_FILE} is not an adaptnet shard index") from None

    def _read_file(self, name: str) -> bytes:
        if self.s3:
            return self.s3.get(name)
        try:
            return (self.root / name).read_bytes()
        except OSError as err:
            raise DataError(f"data.dataset: {self.spec!r} cannot read {name}: {err.strerror}") from None

    def __getstate__(self):
        return {**self.__dict__, "_files": {}}

    def listing(self) -> Listing:
        """refs: an (N, 3) int64 array of (shard, offset, size) rows, one per sample (compact at 1.28M)."""
        splits = {}
        for split in ("train", "test"):
            table = self.index["splits"].get(split)
            if not table:
                raise DataError(f"data.dataset: {self.spec!r} index has no {split} split")
            rows = table["samples"]
            if isinstance(rows, str):  # adaptnet-shards/2: a .npy file beside the index
                try:
                    rows = np.load(io.BytesIO(self._read_file(rows)), allow_pickle=False)
                except ValueError as err:
                    raise DataError(f"data.dataset: {self.spec!r} {table['samples']} is not a sample table ({err})") from None
            samples = np.asarray(rows, dtype=np.int64).reshape(-1, 4)  # shard, offset, size, label
            splits[split] = (samples[:, :3].copy(), samples[:, 3].copy())
        self._check_shards(splits)
        return Listing(list(self.index["classes"]), splits)

    def _check_shards(self, splits: dict) -> None:
        """Every shard a sample points to is in the index and, on local disk, there; no tar beside it is
        missing from the index (shards and index written apart)."""
        named = set(self.index["shards"])
        used = max((int(refs[:, 0].max()) for refs, _ in splits.values() if len(refs)), default=-1)
        if used >= len(named):
            raise DataError(f"data.dataset: {self.spec!r} a sample points to shard {used}, the index names {len(named)}")
        if self.root is None:
            return
        missing = sorted(n for n in named if not (self.root / n).exists())
        stray = sorted(p.name for p in self.root.glob("*.tar") if p.name not in named)
        if missing or stray:
            what = f"shard {missing[0]} is in its index but missing" if missing else f"shard {stray[0]} has no index entry"
            raise DataError(f"data.dataset: {self.spec!r} {what} (write shards with their index: adaptnet data shard "
                            "SRC DST)")

    def describe(self, ref) -> str:
        return f"{self.index['shards'][int(ref[0])]}@{int(ref[1])}"

    def open_span(self, shard: int, start: int, end: int):
        """A file-like object reading bytes [start, end) of one shard front to back: one ranged GET on S3."""
        name = self.index["shards"][shard]
        if self.s3:
            return self.s3.get(name, (start, end - start), stream=True)
        try:
            handle = open(self.root / name, "rb")
        except OSError as err:
            raise DataError(f"data.dataset: {self.spec!r} cannot read {name}: {err.strerror}") from None
        handle.seek(start)
        return handle

    def read(self, ref) -> bytes:
        shard, offset, size = (int(v) for v in ref)
        name = self.index["shards"][shard]
        if self.s3:
            return self.s3.get(name, (offset, size))
        handle = self._files.get(shard)
        if handle is None:  # one open file per shard and process; pread needs no shared position
            handle = self._files[shard] = os.open(self.root / name, os.O_RDONLY)
        data = os.pread(handle, size, offset)
        if len(data) != size:
            raise DataError(f"data.dataset: {self.spec!r} shard {name} is shorter than its index says")
        return data


def s3_cache_path(cache: Path, bucket: str, key: str) -> Path:
    """Where s3://bucket/key is kept: a hash of the URI plus a sanitised file name, so no key (`../x`,
    `/etc/x`) can point outside the cache."""
    digest = hashlib.sha1(f"{bucket}/{key}".encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", key.rsplit("/", 1)[-1]).lstrip(".") or "object"
    return cache / "s3" / digest / name


def fetch_s3(uri: str, cache: Path) -> Path:
    """Downloads s3://bucket/key into the cache unless the cached copy has the same ETag."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket or not key:
        raise DataError(f"data.dataset: {uri!r} is not of the form s3://bucket/key")
    target = s3_cache_path(cache, bucket, key)
    etag_file = target.with_name(target.name + ".etag")
    try:
        s3 = s3_client()
        etag = s3.head_object(Bucket=bucket, Key=key)["ETag"]
        if target.exists() and etag_file.exists() and etag_file.read_text() == etag:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.part{os.getpid()}")
        s3.download_file(bucket, key, str(partial))
    except (BotoCoreError, ClientError) as err:
        raise DataError(f"data.dataset: cannot fetch {uri!r}: {err}") from None
    partial.replace(target)
    etag_file.write_text(etag)
    return target
