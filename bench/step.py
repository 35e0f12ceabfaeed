"""One training step (forward, the technique's losses, backward, SGD step) of MSDNet-CIFAR, ResNet56-ADN and
ViT-ADN, eager vs `train.channels_last` vs `train.compile` (torch.compile), interleaved in one run.

Prints per model the median ms/step of each variant, its ratio to eager (> 1: faster) and the compile time
(the first compiled steps minus an eager step); asserts nothing (timings are noisy on shared machines).
Usage: python bench/step.py [--batch 64] [--rounds 5] [--device auto|cpu|cuda] [--threads N]
"""
import argparse
import statistics
import time

import torch

from adaptnet.loop import build_config, read_yaml
from adaptnet.loop.build import build_training
from adaptnet.loop.trainer import build_optimizer, pick_device

MODELS = {  # label: (preset, overrides)
    "MSDNet-CIFAR": ("cifar10-smoke", []),
    "ResNet56-ADN": ("cifar10-resnet56-adn", []),
    "ViT-ADN": ("cifar10-resnet56-adn", ["model.name=vit_t4_cifar_adn", "optim.name=adamw", "optim.lr=0.001"]),
}
VARIANTS = ("eager", "channels_last", "compile")


def make_step(preset: str, overrides: list[str], variant: str, device: torch.device, batch: int, seed: int = 0):
    cfg = build_config(read_yaml(preset), ["data.dataset=cifar10", *overrides])
    torch.manual_seed(seed)
    model, task = build_training(cfg, 10)
    fmt = torch.channels_last if variant == "channels_last" else torch.contiguous_format
    model = model.to(device, memory_format=fmt).train()
    optimizer = build_optimizer(cfg, model)
    trained = torch.compile(model) if variant == "compile" else model
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        task(trained, x, y, lambda loss: loss.backward())
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    steps, first = {}, {}
    for label, (preset, overrides) in MODELS.items():
        for variant in VARIANTS:
            steps[label, variant] = make_step(preset, overrides, variant, device, args.batch)
            # two warm-up steps: compile (ADN compiles a graph per sub-network: super and base), allocator
            first[label, variant] = steps[label, variant]() + steps[label, variant]()
            print(f"warm-up {label} {variant}: {first[label, variant]:.1f} s for 2 steps", flush=True)
    times = {key: [] for key in steps}
    for _ in range(args.rounds):  # interleaved: drifting machine load hits every variant alike
        for key, step in steps.items():
            times[key].append(step())
    print(f"{device.type}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"median of {args.rounds} interleaved rounds")
    print(f"{'model':<14} {'eager ms':>9} {'channels_last':>14} {'compile':>9} {'compile time s':>15}")
    for label in MODELS:
        median = {v: statistics.median(times[label, v]) for v in VARIANTS}
        compile_s = first[label, "compile"] - 2 * median["eager"]
        print(f"{label:<14} {median['eager'] * 1e3:>9.1f} {median['eager'] / median['channels_last']:>13.2f}x "
              f"{median['eager'] / median['compile']:>8.2f}x {compile_s:>15.1f}")


if __name__ == "__main__":
    main()
