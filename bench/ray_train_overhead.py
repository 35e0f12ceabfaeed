"""Ray Train cost on this machine: a 1-worker TorchTrainer vs the bare single-process loop on the same steps.

Prints training throughput inside the loop (Ray / bare, goal ≥ 0.95) and the fixed cost of a Ray Train run
(wall-time difference for the same work: process start-up, rendezvous, checkpoint reports, teardown).
Asserts nothing. Usage: python bench/ray_train_overhead.py [DATASET_SPEC]
"""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import ray

from adaptnet.cluster.run.runtime import runtime_env
from adaptnet.cluster.run.train import ClusterOptions, train_on_ray
from adaptnet.loop import fit, load_config


def config(root: Path, spec: str, name: str):
    return load_config("cifar10-smoke", [
        f"name={name}", f"output_dir={root}", f"data.dataset={spec}", "model.name=msdnet_cifar_budgeted",
        "data.train_subset=1024", "data.holdout=64", "data.test_subset=64", "train.epochs=2", "train.threads=1",
        "train.progress=false"])


def loop_rate(run_dir: Path) -> float:
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return sum(e["train/samples"] for e in epochs) / sum(e["epoch_time_s"] for e in epochs)


def main(spec: str):
    spec = str(Path(spec).resolve()) if Path(spec).exists() else spec
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        os.chdir(root)  # mlflow.db and ray_results land in the scratch folder
        start = time.perf_counter()
        bare = fit(config(root, spec, "bare"))
        bare_wall = time.perf_counter() - start

        ray.init(address="local", num_cpus=2, runtime_env=runtime_env())
        start = time.perf_counter()
        train_on_ray(config(root, spec, "ray"), ClusterOptions(workers=1, cpus_per_worker=1))
        ray_wall = time.perf_counter() - start
        ray.shutdown()

        ratio = loop_rate(root / "ray") / loop_rate(bare.run_dir)
        print(f"bare loop: {loop_rate(bare.run_dir):.1f} img/s, wall {bare_wall:.1f} s")
        print(f"1-worker TorchTrainer: {loop_rate(root / 'ray'):.1f} img/s in the loop, wall {ray_wall:.1f} s "
              "(Ray already started)")
        print(f"throughput ratio Ray/bare: {ratio:.2f} (goal >= 0.95)")
        print(f"fixed cost of a Ray Train run: {ray_wall - bare_wall:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ADAPTNET_DATASET", "cifar10"))
