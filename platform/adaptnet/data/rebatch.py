"""Collated chunks → batches of exactly `batch_size` samples (good or failed), for loaders whose decode
processes each end an epoch on a partial chunk (shard streaming), so every rank yields the same number of
batches. A chunk is what `streaming.Collate` makes."""
from __future__ import annotations

import torch


def rebatch(chunks, batch_size: int):
    """Collated chunks (streamed by several processes, each ending on a partial one) → batches of exactly
    `batch_size` samples, good or failed, so every rank yields the same number of batches."""
    pending: list[dict] = []
    count = 0
    for chunk in chunks:
        pending.append(chunk)
        count += _size(chunk)
        while count >= batch_size:
            batch, pending = _take(pending, batch_size)
            count -= batch_size
            yield batch
    if count:
        yield _take(pending, count)[0]


def _size(chunk: dict) -> int:
    return len(chunk["errors"]) + (0 if chunk["images"] is None else len(chunk["labels"]))


def _take(chunks: list[dict], n: int) -> tuple[dict, list[dict]]:
    """The first n samples of the chunks as one collated batch, and what is left."""
    parts, rest = [], []
    for chunk in chunks:
        if n <= 0:
            rest.append(chunk)
            continue
        size = _size(chunk)
        if size <= n:
            parts.append(chunk)
        else:
            head, tail = _split(chunk, n)
            parts.append(head)
            rest.append(tail)
        n -= min(size, n)
    return _join(parts), rest


def _split(chunk: dict, n: int) -> tuple[dict, dict]:
    """A chunk cut after n samples, errors counted first."""
    errors = chunk["errors"]
    if n <= len(errors):
        return {**chunk, "errors": errors[:n], "images": None}, {**chunk, "errors": errors[n:]}
    k = n - len(errors)
    cut = {key: (None if chunk[key] is None else chunk[key][:k]) for key in ("images", "labels", "ids", "encoded")}
    left = {key: (None if chunk[key] is None else chunk[key][k:]) for key in ("images", "labels", "ids", "encoded")}
    return {"errors": errors, **cut}, {"errors": [], **left}


def _join(parts: list[dict]) -> dict:
    good = [p for p in parts if p["images"] is not None and len(p["labels"])]
    batch = {"errors": [e for p in parts for e in p["errors"]], "images": None}
    if good:
        listed = good[0]["encoded"] is not None
        batch.update(images=[x for p in good for x in p["images"]] if listed else torch.cat([p["images"] for p in good]),
                     labels=torch.cat([p["labels"] for p in good]), ids=torch.cat([p["ids"] for p in good]),
                     encoded=[e for p in good for e in p["encoded"]] if listed else None)
    return batch
