"""Dataset spec → the reader of its storage format, and `inspect`: classes, counts per split and image-size
statistics from a listing plus a few image headers, never a full decode.

Specs the streaming loaders read: an ImageFolder folder, an `s3://bucket/prefix` holding one, a folder or
s3 prefix of tar shards with `index.json`, or a `.tar`/`.tar.gz` ImageFolder archive (unpacked once into the
cache; members with absolute or `..` names are refused). `cifar10`/`cifar100` exist only as memory data.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from .decode import image_size
from .errors import DataError
from .readers import INDEX_FILE, FolderReader, S3FolderReader, ShardReader, _S3Base, fetch_s3, scan_archive

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
TORCHVISION_SETS = ("cifar10", "cifar100")
HEADER_SAMPLE = 64  # images per split whose headers `inspect` reads for size statistics


def default_cache_root() -> Path:
    return Path(os.environ.get("ADAPTNET_CACHE", Path.home() / ".cache" / "adaptnet"))


def source_key(path: Path, *extra) -> str:
    """A cache key for a local dataset file or folder: its path, size and mtime (and `extra`), so that a changed
    source is read again."""
    stat = path.stat()
    text = "|".join(str(part) for part in (path.resolve(), stat.st_size, stat.st_mtime_ns, *extra))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def is_archive(spec: str) -> bool:
    return spec.lower().endswith(ARCHIVE_SUFFIXES)


def open_reader(spec: str, cache_root: str | Path | None = None):
    """The reader for a streaming spec (see the module docstring)."""
    cache = Path(cache_root) if cache_root else default_cache_root()
    if spec.lower() in TORCHVISION_SETS:
        raise DataError(f"data.dataset: {spec} is torchvision's array copy and streams from no files; "
                        "use data.loader: memory (or an ImageFolder copy of it)")
    if spec.startswith("s3://"):
        if is_archive(spec):
            return FolderReader(unpacked(fetch_s3(spec, cache), cache, spec), spec)
        probe = _S3Base(spec.rstrip("/"))
        try:
            probe.client.head_object(Bucket=probe.bucket, Key=probe._key(INDEX_FILE))
            return ShardReader(spec.rstrip("/"), spec)
        except Exception:  # noqa: BLE001 — no index object: an ImageFolder prefix (listing errors are DataErrors)
            return S3FolderReader(spec.rstrip("/"))
    local = Path(spec).expanduser()
    if not local.exists():
        raise DataError(f"data.dataset: {spec!r} does not exist (expected cifar10, cifar100, an ImageFolder "
                        f"folder or archive, a folder of shards with {INDEX_FILE}, local or s3://)")
    if local.is_dir():
        if (local / INDEX_FILE).exists():
            return ShardReader(str(local), spec)
        if any(local.glob("*.tar")) and not (local / "train").is_dir():
            raise DataError(f"data.dataset: {spec!r} holds tar shards but no {INDEX_FILE} "
                            "(write shards with their index: adaptnet data shard SRC DST)")
        return FolderReader(local, spec)
    if is_archive(spec):
        return FolderReader(unpacked(local, cache, spec), spec)
    raise DataError(f"data.dataset: {spec!r} is neither a folder nor a .tar/.tar.gz archive")


def unpacked(archive: Path, cache: Path, spec: str) -> Path:
    """The archive's ImageFolder tree, unpacked once under the cache (keyed by path, size and mtime)."""
    key = source_key(archive)
    target = cache / "unpacked" / key
    if (target / ".complete").exists():
        return _tree_root(target, spec)
    partial = target.with_name(f"{key}.part{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            tar.extractall(partial, filter="data")  # refuses absolute names, `..`, links out of the tree
    except (tarfile.TarError, OSError, EOFError) as err:
        shutil.rmtree(partial, ignore_errors=True)
        reason = str(err).splitlines()[0].rstrip(":")
        raise DataError(f"data.dataset: cannot unpack archive {spec!r}: {reason}") from None
    (partial / ".complete").touch()
    try:
        partial.rename(target)
    except OSError:  # another process unpacked it first
        shutil.rmtree(partial, ignore_errors=True)
    return _tree_root(target, spec)


def _tree_root(folder: Path, spec: str) -> Path:
    """The folder holding train/: the archive's top level or its single top-level folder."""
    if (folder / "train").is_dir():
        return folder
    children = [p for p in folder.iterdir() if p.is_dir()]
    if len(children) == 1 and (children[0] / "train").is_dir():
        return children[0]
    raise DataError(f"data.dataset: {spec!r} has no train/ folder at its top level")


@dataclass
class DatasetInfo:
    spec: str
    format: str                                  # memory | folder | s3-folder | shards
    classes: list[str]
    counts: dict[str, int]                       # split → images
    sizes: dict[str, dict] = field(default_factory=dict)  # split → {"sampled", "min", "max", "median", "one_size"}

    @property
    def one_size(self) -> bool:
        return all(s.get("one_size") for s in self.sizes.values())

    def summary(self) -> str:
        lines = [f"{self.spec}: {self.format}, {len(self.classes)} classes"]
        for split, count in self.counts.items():
            s = self.sizes.get(split, {})
            size = (f"; sizes of {s['sampled']} sampled: {s['min']}–{s['max']} (median {s['median']})"
                    if s.get("sampled") else "")
            if s.get("unreadable"):
                size += f"; {s['unreadable']} sampled unreadable, e.g. {s['first_error']}"
            lines.append(f"  {split}: {count} images{size}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def _sampled_sizes(reader, refs: list, picks) -> tuple[list[tuple[int, int]], list[str]]:
    """Header sizes of the picked samples, and the errors of those whose header cannot be read."""
    sizes, errors = [], []
    for i in picks:
        try:
            sizes.append(image_size(reader.read(refs[i]), reader.describe(refs[i])))
        except DataError as err:  # skipped or fatal when training reaches it (data.bad_images)
            errors.append(str(err))
    return sizes, errors


def _size_stats(sizes: list[tuple[int, int]], errors: list[str] = ()) -> dict:
    if not sizes:
        return {"unreadable": len(errors), "first_error": errors[0]} if errors else {}
    arr = np.array(sizes)
    return {"sampled": len(sizes), "min": f"{arr[:, 0].min()}×{arr[:, 1].min()}",
            "max": f"{arr[:, 0].max()}×{arr[:, 1].max()}",
            "median": f"{int(np.median(arr[:, 0]))}×{int(np.median(arr[:, 1]))}", "one_size": len(set(sizes)) == 1,
            "unreadable": len(errors), **({"first_error": errors[0]} if errors else {})}


TORCHVISION_COUNTS = {"cifar10": (10, 50_000, 10_000), "cifar100": (100, 50_000, 10_000)}  # classes, train, test


def _inspect_archive(path: Path, spec: str, sample: int) -> DatasetInfo:
    """One pass over an ImageFolder archive's members (no unpacking): the listing, the first headers."""
    sizes: dict[str, list[tuple[int, int]]] = {}

    def header(folder: str, member) -> None:
        if len(sizes.setdefault(folder, [])) < sample:
            try:
                sizes[folder].append(image_size(tar.extractfile(member).read(), member.name))
            except DataError:
                pass  # the memory loader decodes every image and names a broken one

    try:
        with tarfile.open(path, mode="r:*") as tar:
            listing = scan_archive(tar, spec, header)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"data.dataset: cannot read archive {spec!r}: {str(err).splitlines()[0].rstrip(':')}") from None
    eval_folder = "val" if sizes.get("val") else "test"
    return DatasetInfo(spec, "archive", listing.classes, {s: listing.count(s) for s in listing.splits},
                       {"train": _size_stats(sizes.get("train", [])), "test": _size_stats(sizes.get(eval_folder, []))})


def _inspected_archive(path: Path, spec: str, sample: int, cache: Path) -> DatasetInfo:
    """`_inspect_archive`, read once per archive (keyed by path, size and mtime) and then from the cache: a
    pass over CIFAR-10's 120,000 gzip'd members costs seconds, and every run, trial and evaluation plans."""
    key = source_key(path, sample)
    cached = cache / "inspected" / f"{key}.json"
    try:
        return DatasetInfo(**{**json.loads(cached.read_text()), "spec": spec})
    except (OSError, ValueError, TypeError):  # not there yet (or unreadable): inspect and write it
        pass
    info = _inspect_archive(path, spec, sample)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{key}.part{os.getpid()}")
        partial.write_text(info.to_json())
        partial.replace(cached)  # atomic: a concurrent reader sees all of it or nothing
    except OSError:
        pass  # a read-only cache only costs the next run the pass again
    return info


def inspect_dataset(spec: str, cache_root: str | Path | None = None, sample: int = HEADER_SAMPLE) -> DatasetInfo:
    """What a run needs to plan, without decoding the dataset: listing + `sample` headers per split."""
    if spec.lower() in TORCHVISION_COUNTS:
        classes, n_train, n_test = TORCHVISION_COUNTS[spec.lower()]
        one = {"sampled": 0, "min": "32×32", "max": "32×32", "median": "32×32", "one_size": True}
        return DatasetInfo(spec, "torchvision", [str(c) for c in range(classes)], {"train": n_train, "test": n_test},
                           {"train": one, "test": one})
    if is_archive(spec) and (spec.startswith("s3://") or Path(spec).expanduser().is_file()):
        cache = Path(cache_root) if cache_root else default_cache_root()
        local = fetch_s3(spec, cache) if spec.startswith("s3://") else Path(spec).expanduser()  # once, as for training
        return _inspected_archive(local, spec, sample, cache)
    reader = open_reader(spec, cache_root)
    listing = reader.listing()
    fmt = {FolderReader: "folder", S3FolderReader: "s3-folder", ShardReader: "shards"}[type(reader)]
    sizes = {}
    for split, (refs, _) in listing.splits.items():
        if fmt == "shards" and reader.index.get("sizes", {}).get(split):
            sizes[split] = reader.index["sizes"][split]
            continue
        picks = np.linspace(0, len(refs) - 1, num=min(sample, len(refs))).astype(int)
        sizes[split] = _size_stats(*_sampled_sizes(reader, refs, picks))
    return DatasetInfo(spec, fmt, listing.classes, {s: listing.count(s) for s in listing.splits}, sizes)
