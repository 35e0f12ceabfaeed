"""ADN cost on this machine, against what the MACs predict (prints ratios measured in one run; asserts nothing).

Per model:
- training step: the ADN self-distillation step (super + base forward and backward) vs a plain step of its
  plain counterpart (torchvision's model where the ADN model is torchvision's, else the same net's super-net
  with cross-entropy); MACs predict (super + base) / plain.
- inference: super-net vs base-net forward time; MACs predict super / base.
Times are medians of interleaved rounds after one warm-up round.
Usage: python bench/adn_step.py [MODEL ...] [--batch N] [--rounds R]
       (default: every CIFAR-scale ADN model at batch 64; ImageNet models are slow on a CPU: use --batch 8)
"""
import argparse
import time

import torch
import torch.nn.functional as F
import torchvision

import adaptnet
from adaptnet.metrics.costs import _Meter, subnet_costs
from adaptnet.models import model_entry
from adaptnet.techniques import SuperBaseDistillation

CIFAR_MODELS = ["resnet56_adn", "mobilenet_v2_cifar_adn", "swin_cifar_adn", "vit_t4_cifar_adn"]
TORCHVISION_PLAIN = {"mobilenet_v2_adn": torchvision.models.mobilenet_v2, "swin_t_adn": torchvision.models.swin_t,
                     "resnet50_adn": torchvision.models.resnet50, "vit_b16_adn": torchvision.models.vit_b_16}


def _median(fn, rounds: int, others=()) -> list[float]:
    """Median seconds of each of `fn, *others`, run interleaved."""
    fns = [fn, *others]
    times = [[] for _ in fns]
    for step in range(rounds + 1):
        for i, f in enumerate(fns):
            start = time.perf_counter()
            f()
            if step:  # the first round warms up
                times[i].append(time.perf_counter() - start)
    return [sorted(t)[len(t) // 2] for t in times]


def _macs(model, size: int) -> int:
    with _Meter(model, "torchvision") as meter:
        model(torch.zeros(1, 3, size, size))
        return meter.read()[0]


def bench(name: str, batch: int, rounds: int) -> None:
    entry = model_entry(name)
    size = entry.input_size
    model = adaptnet.create_model(name)
    plain_model = TORCHVISION_PLAIN[name]() if name in TORCHVISION_PLAIN else None
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, entry.num_classes, (batch,))
    task = SuperBaseDistillation()
    costs = {c.skip: c.macs for c in subnet_costs(model, size, "torchvision")}
    super_macs, base_macs = costs["F" * model.num_stages], costs["T" * model.num_stages]
    plain_macs = _macs(plain_model, size) if plain_model is not None else super_macs

    def step(net, body):
        def run():
            net.train()
            net.zero_grad(set_to_none=True)
            body()
        return run

    adn = step(model, lambda: task(model, x, y))
    plain = step(plain_model, lambda: F.cross_entropy(plain_model(x), y).backward()) if plain_model is not None \
        else step(model, lambda: F.cross_entropy(model(x), y).backward())
    t_plain, t_adn = _median(plain, rounds, [adn])

    model.eval()
    with torch.no_grad():
        t_super, t_base = _median(lambda: model(x), rounds, [lambda: model(x, skip=(True,) * model.num_stages)])
    counterpart = "torchvision's plain model" if plain_model is not None else "its own super-net, CE only"
    print(f"{name} (batch {batch}, {size}×{size}; plain = {counterpart})")
    print(f"  train step: plain {t_plain * 1e3:.1f} ms, ADN {t_adn * 1e3:.1f} ms, ratio {t_adn / t_plain:.2f} "
          f"(MACs predict {(super_macs + base_macs) / plain_macs:.2f})")
    print(f"  inference: super {t_super * 1e3:.1f} ms, base {t_base * 1e3:.1f} ms, ratio {t_super / t_base:.2f} "
          f"(MACs predict {super_macs / base_macs:.2f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", default=CIFAR_MODELS)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    for name in args.models:
        bench(name, args.batch, args.rounds)


if __name__ == "__main__":
    main()
