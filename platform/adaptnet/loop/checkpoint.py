"""Checkpoint files: one dict (model, optimizer, scheduler, scaler, epoch, config, split, extra state),
written atomically and read back with `weights_only=True` (tensors and plain Python only)."""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

REQUIRED = ("model", "optimizer", "scheduler", "epoch", "config", "split")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file."""


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint: {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint: {str(path)!r} is corrupt or not an adaptnet checkpoint ({reason})") from None
    missing = [key for key in REQUIRED if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"checkpoint: {str(path)!r} lacks {', '.join(missing)}")
    return state


def restore_scaler(scaler: torch.amp.GradScaler, state: dict | None) -> None:
    """A checkpoint's GradScaler state, if it has one: a checkpoint written without float16 AMP (on a CPU, or
    AMP off) holds an empty state, and an enabled scaler then starts afresh (its default scale) instead of
    refusing it."""
    if state or not scaler.is_enabled():
        scaler.load_state_dict(state or {})


def save_checkpoint(path: Path, state: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    tmp.replace(path)  # a crash mid-save never leaves a broken file behind
    return path
