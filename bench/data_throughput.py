"""Decode + RandomResizedCrop(224) + flip throughput per CPU core on the real ImageNet sample: the raw PIL
decode rate (the floor: `Image.open(...).convert("RGB")`, one thread), the DataLoader twin with 1 decode
process (the two in side-by-side pairs over the 1,000 files: this machine's speed drifts by a quarter within
minutes), and Ray Data on 1 CPU over 10,000 samples (the files repeated by reference), in interleaved rounds;
medians are printed, and what they imply in CPU cores per GPU at NVIDIA's
published ResNet-50 v1.5 AMP rate on an A100 (2,470 images/s). Asserts nothing.
Goals: twin ≥ 0.85 × the raw decode rate per core; Ray Data ≥ 0.8 × the twin per CPU; ≤ 8 cores per GPU.
(Reduced-size JPEG decoding was measured out: 27 of the sample's 1,000 RandomResizedCrop(224) crops are large
enough for a 1/2-scale decode.)
The last line reads `loader / raw decode per core: X.XX×` (the twin's median ratio), to compare runs.

Usage: python bench/data_throughput.py [ROUNDS]   (default 3; needs ../shared/data/imagenet-sample-1000.tar)
"""
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample-1000.tar"
BATCH = 64  # a rank's batch in the ResNet50/MobileNetV2 ADN and MSDNet ImageNet presets
SAMPLES = 10_000  # Ray Data reads the 1,000 files 10 times
PAIRS = 4  # raw / twin pairs per round
GPU_RATE = 2_470  # images/s: NVIDIA's ResNet-50 v1.5 training, A100 80GB, AMP (adaptnet.metrics.compute)


def tree_from_sample(tmp: Path, repeats: int = 1) -> Path:
    """An ImageFolder of the sample: each image in train/ (`repeats` times, by link) and once in val/."""
    if not (tmp / "raw").exists():
        with tarfile.open(SAMPLE) as tar:
            tar.extractall(tmp / "raw", filter="data")
    tree = tmp / ("tree" if repeats == 1 else f"tree{repeats}")
    for image in sorted((tmp / "raw").rglob("*.JPEG")):
        wnid = image.name.split("_", 1)[0]
        for split, copies in (("train", repeats), ("val", 1)):
            (tree / split / wnid).mkdir(parents=True, exist_ok=True)
            for k in range(copies):
                (tree / split / wnid / (image.name if k == 0 else f"{k}_{image.name}")).symlink_to(image)
    return tree


def raw_decode_rate(tree: Path) -> float:
    from adaptnet.data.decode import decode_rgb

    files = sorted((tree / "train").rglob("*.JPEG"))
    start = time.perf_counter()
    for f in files:
        decode_rgb(f.read_bytes(), f.name)
    return len(files) / (time.perf_counter() - start)


def torch_loader_rate(tree: Path) -> float:
    from adaptnet.data import prepare_data
    from adaptnet.loop.config import DataConfig

    data = prepare_data(DataConfig(dataset=str(tree), holdout=0, workers=1, loader="torch"), BATCH, BATCH, seed=0)
    iterator = iter(data.train)
    next(iterator)  # the decode process is up
    start, n = time.perf_counter(), 0
    for _, labels in iterator:
        n += len(labels)
    return n / (time.perf_counter() - start)


def ray_loader_rate(tree: Path) -> float:
    """Ray Data's batches (tasks on the 1 CPU Ray has here) as a Train worker reads them, over the whole tree."""
    from adaptnet.cluster.run.ray_data import RayBatches
    from adaptnet.data import streamed, streaming_plan
    from adaptnet.loop.config import DataConfig

    cfg = DataConfig(dataset=str(tree), holdout=0, loader="ray")
    data = streamed(streaming_plan(cfg), cfg, BATCH, BATCH, seed=0, batches_class=RayBatches, loader="ray")
    batches = iter(data.train)
    next(batches)  # Ray Data's workers are up
    start, n = time.perf_counter(), 0
    for _, labels in batches:
        n += len(labels)
    return n / (time.perf_counter() - start)


def main(rounds: int) -> None:
    import ray
    import torch

    torch.set_num_threads(1)  # the training side's work (normalising batches) keeps to the other core

    with tempfile.TemporaryDirectory() as tmp:
        tree = tree_from_sample(Path(tmp))
        many = tree_from_sample(Path(tmp), repeats=SAMPLES // 1000)
        rates = {k: [] for k in ("raw", "torch", "ray")}
        for _ in range(rounds):  # interleaved rounds; Ray runs only for its own measurement (its processes use CPU)
            for _ in range(PAIRS):  # raw and twin side by side, 1,000 images each: the machine's speed drifts
                rates["raw"].append(raw_decode_rate(tree))
                rates["torch"].append(torch_loader_rate(tree))
            ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)  # Ray Data on 1 CPU
            rates["ray"].append(ray_loader_rate(many))
            ray.shutdown()
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = statistics.median(t / r for t, r in zip(rates["torch"], rates["raw"]))
    print(f"ImageNet sample (1,000 real JPEGs), decode + RandomResizedCrop(224) + flip, images/s per core, "
          f"medians of {rounds} interleaved rounds ({PAIRS} raw / twin pairs each):")
    print(f"  raw PIL decode (the floor):         {med['raw']:7.1f}")
    print(f"  DataLoader twin, 1 decode process:  {med['torch']:7.1f}   = {ratio:.2f} × raw decode (goal ≥ 0.85)")
    print(f"  Ray Data, 1 CPU, {SAMPLES:,} samples:     {med['ray']:7.1f}   = {med['ray'] / med['torch']:.2f} × "
          "the twin (goal ≥ 0.8)")
    print(f"cores per GPU at {GPU_RATE:,} images/s (A100, ResNet-50 AMP): twin {GPU_RATE / med['torch']:.1f}, "
          f"Ray Data {GPU_RATE / med['ray']:.1f} (goal ≤ 8); data.decode: gpu moves the decode to nvjpeg")
    print("per pair, twin / raw decode: " + ", ".join(f"{t / r:.2f}" for t, r in zip(rates["torch"], rates["raw"])))
    print(f"loader / raw decode per core: {ratio:.2f}×")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
