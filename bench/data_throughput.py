"""Decode + RandomResizedCrop(224) + flip throughput per CPU core on the real ImageNet sample, for both
streaming loaders (the torch DataLoader twin with 1 decode process; Ray Data with 1 CPU), the raw PIL decode
rate per core (the floor), and what one training step consumes on this machine (ResNet50-ADN super+base,
MSDNet step 4). Rounds are interleaved (this machine is shared); medians are printed. Asserts nothing.
Goals: loader ≥ 5 × consumption per worker and ≥ 0.8 × the raw decode rate per core.

Usage: python bench/data_throughput.py [ROUNDS]   (default 2; needs ../shared/data/imagenet-sample-1000.tar)
"""
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample-1000.tar"
BATCH = 32


def tree_from_sample(tmp: Path) -> Path:
    with tarfile.open(SAMPLE) as tar:
        tar.extractall(tmp / "raw", filter="data")
    for image in sorted((tmp / "raw").rglob("*.JPEG")):
        for split in ("train", "val"):
            (tmp / "tree" / split / image.name.split("_", 1)[0]).mkdir(parents=True, exist_ok=True)
            (tmp / "tree" / split / image.name.split("_", 1)[0] / image.name).symlink_to(image)
    return tmp / "tree"


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
    from adaptnet.cluster.run.ray_data import build_datasets
    from adaptnet.loop import load_config

    cfg = load_config("cifar10-smoke", [f"data.dataset={tree}", "data.holdout=0", "data.loader=ray",
                                        "data.train_subset=null", "data.transform=imagenet"])
    datasets, _ = build_datasets(cfg)
    start, n = time.perf_counter(), 0
    for batch in datasets["train"].iter_batches(batch_size=BATCH):
        n += len(batch["label"])
    return n / (time.perf_counter() - start)


def train_rate(model_name: str, technique: str, batch: int = 16, steps: int = 3) -> float:
    import adaptnet
    from adaptnet.techniques import MultiExitCE, SuperBaseDistillation

    model = adaptnet.create_model(model_name, 1000)
    task = SuperBaseDistillation(0.5, 1.0, 500) if technique == "adn" else MultiExitCE("equal", model.num_exits)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(batch, 3, 224, 224), torch.randint(0, 1000, (batch,))
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()
        opt.zero_grad()
        task(model, x, y)
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def main(rounds: int) -> None:
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        tree = tree_from_sample(Path(tmp))
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)  # Ray Data on 1 CPU
        rates = {k: [] for k in ("raw", "torch", "ray", "resnet50_adn", "msdnet_step4")}
        for _ in range(rounds):  # interleaved rounds
            rates["raw"].append(raw_decode_rate(tree))
            rates["torch"].append(torch_loader_rate(tree))
            rates["ray"].append(ray_loader_rate(tree))
            rates["resnet50_adn"].append(train_rate("resnet50_adn", "adn"))
            rates["msdnet_step4"].append(train_rate("msdnet_imagenet_step4", "exits"))
        ray.shutdown()
    med = {k: statistics.median(v) for k, v in rates.items()}
    threads = torch.get_num_threads()
    print("ImageNet sample (1,000 real JPEGs), decode + RandomResizedCrop(224) + flip + normalise, images/s per core:")
    print(f"  raw PIL decode (floor):     {med['raw']:7.1f}")
    for k in ("torch", "ray"):
        print(f"  {k:>5} loader, 1 core:        {med[k]:7.1f}   = {med[k] / med['raw']:.2f} × raw decode (goal ≥ 0.8)")
    for k, label in (("resnet50_adn", "ResNet50-ADN super+base"), ("msdnet_step4", "MSDNet step 4")):
        print(f"training consumption, {label}, CPU ({threads} threads): {med[k]:6.1f} images/s; "
              f"torch loader / consumption = {med['torch'] / med[k]:.1f} (goal ≥ 5)")
    print("cores per GPU implied, ASSUMING (not measured here) an A100-class GPU trains ResNet-50-class models at "
          f"≈ 1,000–2,500 images/s (TF32 ↔ AMP): at {med['torch']:.0f} images/s per core that is ≈ {1000 / med['torch']:.0f}–"
          f"{2500 / med['torch']:.0f} decode cores per GPU (CPU-only Ray Data nodes, or DALI-style GPU decode)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
