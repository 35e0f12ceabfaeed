"""Fixed per-trial cost of the sweep machinery (Tune trial + Optuna/grid + MLflow child run + checkpoints, and
a TorchTrainer for multi-worker trials), measured with a trivial training step.

For each trial kind, after a warm-up sweep, two sweeps run one trial at a time: 1 trial and 1 + N trials. Their wall-time difference
divided by N is the cost of one more trial (the Tuner's own start-up cancels out); minus the same trial's
compute measured in this process (`fit` + final evaluation) it is the fixed overhead. Goals: ≤ 5 s per
single-worker trial, ≤ 10 s per multi-worker trial. Prints; asserts nothing.

Usage: python bench/sweep_overhead.py [DATASET_SPEC]   (default $ADAPTNET_DATASET, else cifar10)
"""
import os
import sys
import tempfile
import time
from pathlib import Path

import ray

from adaptnet.cluster.sweep.config import trial_config
from adaptnet.cluster.sweep.driver import run_sweep
from adaptnet.cluster.sweep.spec import SweepSpec
from adaptnet.cluster.tracking.results import final_summary
from adaptnet.cluster.run.runtime import runtime_env
from adaptnet.cluster.sweep.cli import LOCAL_RESOURCES
from adaptnet.loop import build_config, fit, read_yaml

EXTRA_TRIALS = 3
TRIVIAL = ["model.name=msdnet_cifar_budgeted", "model.args={n_blocks: 2, n_channels: 8}", "data.train_subset=64",
           "data.holdout=32", "data.test_subset=32", "train.batch_size=32", "train.epochs=1", "train.threads=1"]


def base_tree(spec: str) -> dict:
    tree = build_config(read_yaml("cifar10-smoke"), [f"data.dataset={spec}", *TRIVIAL]).model_dump()
    tree.pop("output_dir")
    return tree


def compute_seconds(base: dict, root: Path) -> float:
    """One trial's own work, in this (warm) process: the run and its final evaluation."""
    fit(trial_config(base, {}, "warm-up", str(root / "bare")))  # imports, data cache
    start = time.perf_counter()
    cfg = trial_config(base, {}, "bare", str(root / "bare"))
    fit(cfg)
    final_summary(cfg, ())
    return time.perf_counter() - start


def sweep_seconds(base: dict, root: Path, name: str, trials: int, workers: int) -> float:
    spec = SweepSpec(name=name, base=base, grid={"train.seed": list(range(trials))}, workers=workers,
                     max_concurrent=1, storage=str(root / "store"), tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                     experiment="bench", scratch=str(root / "scratch"))
    start = time.perf_counter()
    result = run_sweep(spec)
    assert all(t.status == "FINISHED" for t in result.trials), [t.status for t in result.trials]
    return time.perf_counter() - start


def main(spec: str):
    spec = str(Path(spec).resolve()) if Path(spec).exists() else spec
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        os.chdir(root)
        base = base_tree(spec)
        compute = compute_seconds(base, root)
        ray.init(address="local", num_cpus=2, resources=LOCAL_RESOURCES, runtime_env=runtime_env())
        for label, workers, goal in (("single-worker", 1, 5.0), ("multi-worker (2 DDP workers)", 2, 10.0)):
            sweep_seconds(base, root, f"w{workers}-warm-up", 1, workers)  # first Tune/Train imports and spawns
            one = sweep_seconds(base, root, f"w{workers}-one", 1, workers)
            more = sweep_seconds(base, root, f"w{workers}-more", 1 + EXTRA_TRIALS, workers)
            per_trial = (more - one) / EXTRA_TRIALS
            print(f"{label}: sweep of 1 trial {one:.1f} s, of {1 + EXTRA_TRIALS} trials {more:.1f} s -> "
                  f"{per_trial:.1f} s per extra trial; trial compute {compute:.1f} s; "
                  f"fixed overhead {per_trial - compute:.1f} s per trial (goal <= {goal:.0f} s)", flush=True)
        ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ADAPTNET_DATASET", "cifar10"))
