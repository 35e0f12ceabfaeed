"""MSDNet-CIFAR anytime training speed vs data-loader speed on this machine (goal: loader ≥ 5× training).

Prints measured images/s and their ratio; asserts nothing (timings are noisy on shared machines).
Usage: python bench/throughput.py [DATASET_SPEC]   (default: $ADAPTNET_DATASET, else cifar10)
"""
import os
import sys
import time

import torch

import adaptnet
from adaptnet.data import TensorBatches, load_splits
from adaptnet.data.resolve import resolve_dataset_spec
from adaptnet.data.loader import NORMALIZATION
from adaptnet.techniques import MultiExitCE

BATCH = 64


def train_images_per_s(steps: int = 12) -> float:
    model = adaptnet.create_model("msdnet_cifar_anytime", 10)
    task = MultiExitCE("equal", model.num_exits)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x, y = torch.randn(BATCH, 3, 32, 32), torch.randint(0, 10, (BATCH,))
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            start = time.perf_counter()
        opt.zero_grad()
        task(model, x, y)  # forward and backward
        opt.step()
    return steps * BATCH / (time.perf_counter() - start)


def loader_images_per_s(spec: str) -> float:
    train = load_splits(spec)["train"]
    batches = TensorBatches(train.images, train.labels, BATCH, *NORMALIZATION["cifar10"], augment=True, shuffle=True)
    start = time.perf_counter()
    n = sum(len(labels) for _, labels in batches)
    return n / (time.perf_counter() - start)


if __name__ == "__main__":
    spec = resolve_dataset_spec(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ADAPTNET_DATASET", "cifar10"))
    print(f"torch threads: {torch.get_num_threads()}")
    train_rate = train_images_per_s()
    load_rate = loader_images_per_s(spec)
    print(f"MSDNet-CIFAR anytime train (fwd+bwd+step, batch {BATCH}, CPU): {train_rate:10.1f} images/s")
    print(f"data loader (crop+flip+normalise, batch {BATCH}):            {load_rate:10.1f} images/s")
    print(f"loader / train ratio: {load_rate / train_rate:.1f}  (goal >= 5)")
