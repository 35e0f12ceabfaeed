"""ADN self-distillation step time vs a plain step of the same net (brief §2.1 estimates ~1.6× for ResNet-50).

Prints the measured ratio (median of interleaved rounds); asserts nothing.
Usage: python bench/adn_step.py [MODEL] [BATCH]   (default resnet56_adn, 64)
"""
import sys
import time

import torch
import torch.nn.functional as F

import adaptnet
from adaptnet.metrics.costs import subnet_costs
from adaptnet.models import model_entry
from adaptnet.techniques import SuperBaseDistillation


def main(name: str = "resnet56_adn", batch: int = 64, rounds: int = 8):
    model = adaptnet.create_model(name)
    size = model_entry(name).input_size
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    task = SuperBaseDistillation()

    def plain():
        F.cross_entropy(model(x), y).backward()

    def adn():
        task(model, x, y)

    times = {"plain": [], "adn": []}
    for step in range(rounds + 1):
        for label, fn in (("plain", plain), ("adn", adn)):
            opt.zero_grad()
            start = time.perf_counter()
            fn()
            opt.step()
            if step:  # the first round warms up
                times[label].append(time.perf_counter() - start)
    median = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    costs = {c.skip: c.macs for c in subnet_costs(model, size)}
    predicted = 1 + costs["T" * model.num_stages] / costs["F" * model.num_stages]
    print(f"torch threads: {torch.get_num_threads()}; {name}, batch {batch}")
    print(f"plain step {median['plain'] * 1e3:.1f} ms, ADN step {median['adn'] * 1e3:.1f} ms")
    print(f"ADN / plain step time: {median['adn'] / median['plain']:.2f}  "
          f"(MACs predict {predicted:.2f}: 1 + base/super)")


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["resnet56_adn"]), *(int(a) for a in sys.argv[2:3]))
