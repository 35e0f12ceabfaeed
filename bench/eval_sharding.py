"""One epoch's evaluation (held-out + test splits) on 2 CPU ranks (gloo), before and after sharding: rank 0
evaluating the whole splits while rank 1 waits at the barrier, vs each rank its half with the sums all-reduced.
Interleaved rounds; prints the median seconds of each and their ratio. Asserts nothing.

Usage: python bench/eval_sharding.py [--images 2000] [--rounds 3]   (real CIFAR-10 from ../shared/data)
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

MIRROR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


def _rank(rank: int, port: int, images: int, rounds: int, out: str) -> None:
    import torch.distributed as dist

    from adaptnet.data import prepare_data
    from adaptnet.loop import load_config
    from adaptnet.loop.build import build_training
    from adaptnet.loop.trainer import evaluate

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    cfg = load_config("cifar10-resnet56-adn", [f"data.dataset={MIRROR if MIRROR.exists() else 'cifar10'}",
                                               f"data.holdout={images}", f"data.test_subset={images}"])
    whole = prepare_data(cfg.data, 64, 250, 0)
    shard = prepare_data(cfg.data, 64, 250, 0, rank=rank, world_size=2)
    model, _ = build_training(cfg, whole.num_classes)

    def all_reduce_sum(tensor):
        dist.all_reduce(tensor)
        return tensor

    def rank0_only():
        if rank == 0:
            for split in (whole.holdout, whole.test):
                evaluate(model, split)
        dist.barrier()

    def sharded():
        for split in (shard.holdout, shard.test):
            evaluate(model, split, all_reduce_sum=all_reduce_sum)
        dist.barrier()

    times = {"rank 0 alone": [], "sharded": []}
    for _ in range(rounds):
        for name, run in (("rank 0 alone", rank0_only), ("sharded", sharded)):
            dist.barrier()
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    if rank == 0:
        Path(out).write_text(json.dumps(times))
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000, help="held-out and test images each")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "times.json"
        mp.start_processes(_rank, args=(port, args.images, args.rounds, str(out)), nprocs=2, start_method="spawn")
        times = json.loads(out.read_text())
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"ResNet56-ADN (super-net and base-net outputs), {args.images} held-out + {args.images} test CIFAR-10 images, "
          f"2 ranks × 1 thread, {args.rounds} interleaved rounds")
    for name, value in median.items():
        print(f"  {name:13s} {value:6.2f} s per epoch's evaluation")
    print(f"sharded / rank 0 alone: {median['sharded'] / median['rank 0 alone']:.2f}×")


if __name__ == "__main__":
    main()
