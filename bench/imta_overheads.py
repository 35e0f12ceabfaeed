"""IMTA costs on this machine (prints ratios measured in one run; asserts nothing):

1. Gradient Equilibrium step-time overhead: GE train step / plain train step (goal ≤ 1.03).
2. Budgeted threshold calibration: 40 budgets × 10k held-out samples, seconds (goal ≤ 0.1 s).
3. Real early exit: measured speed-up over running every exit, divided by the FLOPs-predicted
   speed-up, at three budgets (goal ≥ 0.8).
"""
import time

import torch

import adaptnet
from adaptnet.metrics import exit_costs
from adaptnet.metrics.adaptive import (apply_thresholds, budgeted_curve, confidences, early_exit_predict, exit_shares,
                                       find_thresholds)
from adaptnet.techniques import MultiExitCE

torch.manual_seed(0)


def step_seconds(model, x, y, repeats):
    task = MultiExitCE("equal", model.num_exits)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        opt.zero_grad()
        task(model, x, y)  # forward and backward
        opt.step()
        times.append(time.perf_counter() - start)
    return times


def ge_overhead(rounds=12, batch=64):
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    models = {scope: adaptnet.create_model("msdnet_cifar_anytime", 10, ge_scope=scope) for scope in (None, "coarsest", "all")}
    for model in models.values():
        step_seconds(model, x, y, 1)  # warm-up
    totals = {scope: [] for scope in models}
    for _ in range(rounds):  # interleaved so drifts in machine load hit every variant alike
        for scope, model in models.items():
            totals[scope] += step_seconds(model, x, y, 1)
    plain = sorted(totals[None])[len(totals[None]) // 2]
    for scope in ("coarsest", "all"):
        median = sorted(totals[scope])[len(totals[scope]) // 2]
        print(f"GE ({scope}) step / plain step: {median / plain:.3f}  (median of {rounds}, batch {batch}; goal <= 1.03)")


def calibration_time(n=10_000, exits=7, classes=100):
    probs = torch.randn(exits, n, classes).mul(3).softmax(2)
    labels = torch.randint(0, classes, (n,))
    costs = [float(k + 1) for k in range(exits)]
    start = time.perf_counter()
    confidence, _ = confidences(probs)
    order = confidence.argsort(dim=1, descending=True, stable=True)
    for p in range(1, 41):
        find_thresholds(confidence, exit_shares(p / 20, exits), order)
    thresholds_only = time.perf_counter() - start
    start = time.perf_counter()
    budgeted_curve(probs, probs, labels, costs)
    whole = time.perf_counter() - start
    print(f"threshold calibration, 40 budgets x {n} samples: {thresholds_only:.3f} s "
          f"(with applying them to {n} test samples: {whole:.3f} s; goal <= 0.1 s)")


def early_exit_speedup(batch=2000):
    model = adaptnet.create_model("msdnet_cifar_anytime", 10).eval()
    costs = [c.macs for c in exit_costs(model, 32)]
    images = torch.randn(batch, 3, 32, 32)
    with torch.no_grad():
        model(images[:50])  # warm-up
        start = time.perf_counter()
        probs, exit_times = [], []  # one pass through every exit, timing when each exit's logits are out
        for logits, _ in model.exit_stream(images):
            exit_times.append(time.perf_counter() - start)
            probs.append(logits.softmax(1))
        probs = torch.stack(probs)
        full = exit_times[-1]
    # Untrained nets are barely confident; thresholds come from exit shares, as in budgeted evaluation.
    for q in (0.5, 1.0, 1.5):
        confidence, predictions = confidences(probs)
        thresholds = find_thresholds(confidence, exit_shares(q, len(costs)))
        _, expected, counts = apply_thresholds(confidence, predictions, torch.zeros(batch, dtype=torch.long),
                                               thresholds, costs)
        start = time.perf_counter()
        early_exit_predict(model, images, thresholds)
        early = time.perf_counter() - start
        measured, predicted = full / early, costs[-1] / expected
        # What the same exits would save if time were spent per exit as in the full pass (not ∝ MACs:
        # the early high-resolution layers are memory-bound on CPUs).
        time_predicted = full / sum(c / batch * t for c, t in zip(counts, exit_times))
        print(f"early exit q={q}: measured speed-up {measured:.2f}x, FLOPs-predicted {predicted:.2f}x, "
              f"ratio {measured / predicted:.2f} (goal >= 0.8); vs time-predicted {time_predicted:.2f}x: "
              f"{measured / time_predicted:.2f}; exits {counts}")
    print("exit time share of the full pass: " + ", ".join(f"{t / full:.2f}" for t in exit_times)
          + "; MAC share: " + ", ".join(f"{c / costs[-1]:.2f}" for c in costs))


if __name__ == "__main__":
    print(f"torch threads: {torch.get_num_threads()}")
    ge_overhead()
    calibration_time()
    early_exit_speedup()
