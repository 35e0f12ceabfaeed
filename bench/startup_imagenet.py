"""Start-up at ImageNet's size, simulated: an index of 1,281,167 training and 50,000 validation samples over
1,000 classes (the real ImageNet sample's 1,000 JPEGs, written once as shards and referenced again and again
by 1,282 shard names linked to them), then, each in a fresh process, what a run does before its first step:
inspect (classes, counts, sizes), plan (loader, transform, normalisation, listing, held-out split) and the
per-rank split lists, with seconds and peak RSS (a process that imported torch and adaptnet starts at ~0.7 GB);
and the time to the first batch of a Ray Data epoch at 10k and 100k training samples (Ray on 2 CPUs, its
workers starting), and of the next epoch once one was read to its end. Asserts nothing. Goals: inspect + plan + split ≤ 10 s, ≤ 1 GB.

Usage: python bench/startup_imagenet.py   (needs ../shared/data/imagenet-sample-1000.tar)
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_throughput import tree_from_sample  # noqa: E402

TRAIN, VAL, PER_SHARD = 1_281_167, 50_000, 1_000

STEPS = r'''
import json, resource, sys, time
spec, holdout, subset = sys.argv[1], int(sys.argv[2]), sys.argv[3]
from adaptnet.data import inspect_dataset, streaming_plan, streamed
from adaptnet.data.plan import decide
from adaptnet.loop.config import DataConfig
cfg = DataConfig(dataset=spec, holdout=holdout, train_subset=None if subset == "-" else int(subset), workers=0)
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out, t = {}, time.perf_counter()
info = inspect_dataset(spec)
out["inspect"] = (time.perf_counter() - t, rss()); t = time.perf_counter()
decided = decide(cfg, info=info)
plan = streaming_plan(cfg, info=info)
out["plan + split"] = (time.perf_counter() - t, rss()); t = time.perf_counter()
data = streamed(plan, cfg, 256, 256, seed=0, rank=0, world_size=8)
out["rank lists (8 ranks)"] = (time.perf_counter() - t, rss())
if subset != "-":
    import ray
    from adaptnet.cluster.run.ray_data import RayBatches
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    data = streamed(plan, cfg, 256, 256, seed=0, batches_class=RayBatches, loader="ray")
    t = time.perf_counter()
    batches = iter(data.train)
    next(batches)
    batches.close()  # the rest of the epoch is not read: its tasks stop
    out[f"Ray Data epoch start (Ray's workers cold), {len(plan.split['train']):,} samples"] = (time.perf_counter() - t, rss())
    if len(plan.split["train"]) == 10_000:  # a later epoch starts once the one before it was read to its end
        cfg = DataConfig(dataset=spec, holdout=0, train_subset=1_000, workers=0)
        data = streamed(streaming_plan(cfg, info=info), cfg, 256, 256, seed=0, batches_class=RayBatches, loader="ray")
        for epoch in range(2):
            data.train.set_epoch(epoch)
            t = time.perf_counter()
            for i, _ in enumerate(data.train):
                if i == 0:
                    first = time.perf_counter() - t
        out["Ray Data epoch start (the next epoch, warm), 1,000 samples"] = (first, rss())
    ray.shutdown()
print(json.dumps(out))
'''


def imagenet_size_index(tmp: Path) -> Path:
    """Shards of the real sample, and an index of ImageNet's size whose shard names all link to them."""
    from adaptnet.data.shards import write_shards

    from adaptnet.data.readers import ShardReader

    real = tmp / "real"
    index = write_shards(str(tree_from_sample(tmp)), str(real), shard_size=PER_SHARD)
    listing = ShardReader(str(real), str(real)).listing()
    big = tmp / "imagenet"
    big.mkdir()
    names, splits = [], {}
    for split, n in (("train", TRAIN), ("test", VAL)):
        refs, labels = listing.splits[split]
        rows = np.column_stack([refs, labels])
        source = index["shards"][int(refs[0, 0])]
        first = len(names)
        for k in range(-(-n // PER_SHARD)):
            names.append(f"{split}-{first + k:05d}.tar")
            (big / names[-1]).symlink_to(real / source)
        table = rows[np.arange(n) % len(rows)]
        table[:, 0] = first + np.arange(n) // PER_SHARD
        splits[split] = table
    write_index(big, index, names, splits)
    return big


def write_index(folder: Path, like: dict, names: list[str], splits: dict) -> None:
    from adaptnet.data.shards import write_index as write

    write(folder, {**like, "shards": names}, splits)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = imagenet_size_index(Path(tmp))
        size = sum(p.stat().st_size for p in folder.iterdir() if not p.name.endswith(".tar"))
        print(f"ImageNet-size index: {TRAIN:,} training + {VAL:,} validation samples, 1,000 classes, "
              f"{len(list(folder.glob('*.tar'))):,} shards; index files {size / 1e6:.1f} MB")
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        for holdout, subset in ((50_000, "-"), (0, "10000"), (0, "100000")):
            run = subprocess.run([sys.executable, "-c", STEPS, str(folder), str(holdout), subset], env=env,
                                 capture_output=True, text=True)
            if run.returncode:
                sys.exit(run.stderr[-2000:])
            for step, (seconds, rss) in json.loads(run.stdout.strip().splitlines()[-1]).items():
                if subset == "-" or step.startswith("Ray"):
                    print(f"  {step:<60} {seconds:7.2f} s   peak RSS {rss:7.0f} MB")


if __name__ == "__main__":
    main()
