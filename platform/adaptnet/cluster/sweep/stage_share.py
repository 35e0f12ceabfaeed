"""Stages trained once per sweep: a stage whose config equals another trial's stage (e.g. IMTA's stage 1 and the
GE arm's run of the same seed) is trained by the first trial that claims it, published to the sweep's
storage (folder or s3://) and copied by every other trial, which replays its epochs to Tune and MLflow.

A stage's key hashes its whole config except where it is written (`name`, `output_dir`), how it is shown
(`train.progress`) and the technique sections its technique never reads, so equal keys mean the same training,
bit for bit. A stage whose config points into its
trial's own run directory (IMTA's stage 2 reads its stage-1 checkpoint there) is not shared. A claim lives in
a small actor owned by the sweep's driver; its holder beats every few seconds, and a claim without a beat
for `STALE_S` (its trial died) passes to the next trial that asks.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the broker actor's process imports this module, and loop imports torch
    from ...loop import RunConfig

STALE_S = 120.0
BEAT_S = 5.0
MARK = "done.json"


# The technique-specific config sections each technique reads; the others cannot change its training.
SECTIONS_READ = {"multi_exit": (), "adn_distill": ("adn",), "single_depth": ("adn",), "depth_kd": ("adn",),
                 "imta_stage2": ("imta",), "imta_joint": ("imta",)}


def stage_key(stage: RunConfig) -> str | None:
    """The stage's training identity, or None when it cannot be shared."""
    tree = stage.model_dump()
    for key in ("name", "output_dir"):
        tree.pop(key)
    tree["train"].pop("progress")
    for section in ("adn", "imta"):  # e.g. IMTA's stage 1 (multi_exit) is the same training whatever its γ
        if section not in SECTIONS_READ.get(stage.technique, (section,)):
            tree.pop(section)
    text = json.dumps(tree, sort_keys=True)
    if str(Path(stage.output_dir).resolve()) in text:
        return None
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class StageBroker:
    """Who trains which stage key (a Ray actor of the driver; see `broker`)."""

    def __init__(self):
        self.claims: dict[str, tuple[str, float]] = {}

    def claim(self, key: str, trial: str) -> str | None:
        """None: `trial` holds the claim now and trains the stage; else the trial that does."""
        holder = self.claims.get(key)
        if holder and holder[0] != trial and time.time() - holder[1] < STALE_S:
            return holder[0]
        self.claims[key] = (trial, time.time())
        return None

    def beat(self, key: str, trial: str) -> None:
        if self.claims.get(key, (trial,))[0] == trial:
            self.claims[key] = (trial, time.time())

    def release(self, key: str, trial: str) -> None:
        if self.claims.get(key, (None,))[0] == trial:
            del self.claims[key]


def repeated_stage_keys(trials: list[list[tuple[RunConfig, int]]]) -> set[str]:
    """Keys of the stages that more than one of these trials would train."""
    from collections import Counter

    counts = Counter(key for stages in trials for key in {stage_key(stage) for stage, _ in stages} if key)
    return {key for key, count in counts.items() if count > 1}


def broker(sweep: str):
    """The driver's broker actor for this sweep (0 CPUs, so it never takes a trial's slot)."""
    import ray

    return ray.remote(num_cpus=0)(StageBroker).options(name=f"adaptnet-stages-{sweep}", get_if_exists=True).remote()


def _filesystem(storage_path: str, filesystem):
    import pyarrow.fs

    if filesystem is not None:
        return filesystem, storage_path
    if storage_path.startswith("s3://"):
        return pyarrow.fs.FileSystem.from_uri(storage_path)
    return pyarrow.fs.LocalFileSystem(), storage_path


class StageShare:
    """One sweep's shared stages in its storage, under `root/<key>/` (`root`: a folder or an s3:// path)."""

    def __init__(self, root: str, filesystem, broker_handle, trial: str, keys: set[str]):
        self.fs, self.root = _filesystem(root, filesystem)
        self.root = self.root.rstrip("/")
        self.broker, self.trial, self.keys = broker_handle, trial, keys  # keys: those worth sharing

    def marker(self, key: str) -> dict | None:
        import pyarrow.fs

        path = f"{self.root}/{key}/{MARK}"
        if self.fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
            return None
        with self.fs.open_input_stream(path) as stream:
            return json.loads(stream.read())

    def acquire(self, key: str, run_dir: Path, poll_s: float = 2.0) -> dict | None:
        """The published stage copied into `run_dir` (returns its marker), or None: this trial trains it."""
        import ray

        while True:
            marker = self.marker(key)
            if marker:
                self._download(key, run_dir)
                return marker
            if ray.get(self.broker.claim.remote(key, self.trial)) is None:
                return None
            time.sleep(poll_s)

    def publish(self, key: str, run_dir: Path) -> None:
        """The finished stage's run directory, then the marker that makes it visible."""
        import pyarrow.fs

        self.fs.create_dir(f"{self.root}/{key}/run", recursive=True)
        pyarrow.fs.copy_files(str(run_dir), f"{self.root}/{key}/run", source_filesystem=pyarrow.fs.LocalFileSystem(),
                              destination_filesystem=self.fs)
        with self.fs.open_output_stream(f"{self.root}/{key}/{MARK}") as stream:
            stream.write(json.dumps({"trained_by": self.trial, "time": time.time()}).encode())

    def _download(self, key: str, run_dir: Path) -> None:
        import pyarrow.fs

        with tempfile.TemporaryDirectory(dir=run_dir.parent if run_dir.parent.exists() else None) as folder:
            pyarrow.fs.copy_files(f"{self.root}/{key}/run", folder, source_filesystem=self.fs,
                                  destination_filesystem=pyarrow.fs.LocalFileSystem())
            if run_dir.exists():
                shutil.rmtree(run_dir)
            shutil.copytree(folder, run_dir)

    def holding(self, key: str):
        """A context that beats for this trial's claim while it trains, and releases it if training fails."""
        return _Holding(self, key)


class _Holding:
    def __init__(self, share: StageShare, key: str):
        self.share, self.key, self.stop = share, key, threading.Event()

    def _beat(self) -> None:
        while not self.stop.wait(BEAT_S):
            self.share.broker.beat.remote(self.key, self.share.trial)

    def __enter__(self):
        threading.Thread(target=self._beat, daemon=True).start()
        return self

    def __exit__(self, kind, err, tb) -> None:
        self.stop.set()
        if kind is not None:
            self.share.broker.release.remote(self.key, self.share.trial)


class _CountingReporter:
    """Passes epochs on and counts those this process trained."""

    def __init__(self, reporter):
        self.reporter, self.epochs = reporter, 0

    def on_epoch_end(self, epoch: int, metrics: dict, checkpoint_path) -> None:
        self.epochs += 1
        self.reporter.on_epoch_end(epoch, metrics, checkpoint_path)


def replay(run_dir: Path, reporter) -> None:
    """A copied stage's epochs, as its training reported them, with its last checkpoint."""
    from ...loop.trainer import checkpoint_path

    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    for line in filter(str.strip, lines):
        metrics = json.loads(line)
        reporter.on_epoch_end(int(metrics["epoch"]) - 1, metrics, checkpoint_path(run_dir))


def run_stages(stages: list[tuple[RunConfig, int]], reporter_for, share: StageShare | None) -> dict[str, float]:
    """Trains each (stage, step offset), or copies and replays it when another trial published it; returns
    how many stages this process trained and reused (`final/stages_trained`, `final/stages_reused`)."""
    from ...loop import fit
    from ...loop.trainer import checkpoint_path

    trained = reused = 0
    for stage, offset in stages:
        reporter = _CountingReporter(reporter_for(offset))
        key = stage_key(stage) if share else None
        if key is None or key not in share.keys:  # nobody else trains it: nothing to publish
            fit(stage, [reporter])
        elif not checkpoint_path(stage.run_dir).exists() and share.acquire(key, stage.run_dir):
            replay(stage.run_dir, reporter)
            reused += 1
            continue
        else:  # ours to train (or to resume: a restored trial that held the claim)
            share.broker.claim.remote(key, share.trial)
            with share.holding(key):
                fit(stage, [reporter])
            if reporter.epochs or share.marker(key) is None:
                share.publish(key, stage.run_dir)
        trained += reporter.epochs > 0
    return {"final/stages_trained": float(trained), "final/stages_reused": float(reused)}


def reuse_line(trials) -> str:
    """What a sweep trained and reused, from its trials' final results."""
    trained = sum(int(t.metrics.get("final/stages_trained") or 0) for t in trials)
    reused = [t.name for t in trials if t.metrics.get("final/stages_reused")]
    return (f"stages trained: {trained}; reused from storage instead of training again: {len(reused)}"
            + (f" ({', '.join(reused)})" if reused else ""))
