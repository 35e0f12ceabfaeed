"""Deployed adaptive models on this machine (prints ratios measured in one run; asserts nothing):

1. Exported MSDNet (`adaptnet export`), per budget: measured early-exit speed-up over the highest budget's
   request divided by the speed-up its MACs predict, for the network alone, in-process (`mlflow.pyfunc`,
   decode + preprocessing included) and served (`mlflow models serve`, HTTP round trip). Goal ≥ 0.8.
2. ADN sub-networks (static, skipped blocks removed): latency per image at batch 1 and 64 against MACs;
   measured speed-up over the super-net / MACs-predicted speed-up.

  python bench/deploy.py [--msdnet CKPT] [--adn CKPT]     # without checkpoints: trains tiny ones (minutes)
"""
import argparse
import base64
import json
import socket
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

from adaptnet.cluster.tracking.serve import LocalModelServer

REPO = Path(__file__).resolve().parents[1]
MIRROR = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
SMALL = ["data.train_subset=512", "data.holdout=256", "data.test_subset=256", "train.epochs=1", "train.progress=false"]


def train_tiny(root: Path) -> tuple[Path, Path]:
    from adaptnet.loop import fit, load_config
    from adaptnet.loop.trainer import best_checkpoint

    data = [f"data.dataset={MIRROR}", f"output_dir={root}", *SMALL]
    msd = fit(load_config("cifar10-smoke", ["name=msd", "model.name=msdnet_cifar_budgeted", *data]))
    adn = fit(load_config("cifar10-resnet56-adn", ["name=adn", *data]))
    return best_checkpoint(msd.run_dir), best_checkpoint(adn.run_dir)


def test_jpegs(count: int) -> list[bytes]:
    out = []
    with tarfile.open(MIRROR) as tar:
        for member in tar:
            if member.isfile() and "/test/" in f"/{member.name}" and member.name.endswith(".jpg"):
                out.append(tar.extractfile(member).read())
                if len(out) == count:
                    return out
    return out


def best_of(fn, repeats=5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


class Server(LocalModelServer):
    def __init__(self, model_dir: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        super().__init__(model_dir, port, startup_s=180)

    def invoke(self, body: bytes) -> list[dict]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())["predictions"]



def msdnet_bench(checkpoint: Path, work: Path, count: int):
    import mlflow.pyfunc
    import pandas as pd

    from adaptnet.cli import main as cli
    from adaptnet.deploy.preprocess import batch
    from adaptnet.metrics.adaptive import early_exit_predict

    costs = [e["macs"] for e in json.loads((checkpoint.parents[1] / "costs.json").read_text())["exits"]]
    budgets = [costs[0] + f * (costs[-1] - costs[0]) for f in (0.15, 0.4, 0.7)] + [float(costs[-1])]
    model_dir = work / "msdnet"
    cli(["export", str(checkpoint), "--budget", ",".join(map(str, budgets)), "--out", str(model_dir)])
    images = test_jpegs(count)
    loaded = mlflow.pyfunc.load_model(str(model_dir))
    runner = loaded.unwrap_python_model().runner
    frame = pd.DataFrame({"image": images})
    x = batch(images, runner.prepare)
    body = {b: json.dumps({"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(i).decode()] for i in images]},
                           "params": {"budget": b}}).encode() for b in budgets}
    server = Server(model_dir)
    try:
        rows = {}
        for b in budgets:
            thresholds = torch.tensor(runner.point(b).thresholds, dtype=torch.float32)
            macs = sum(loaded.predict(frame, params={"budget": b})["macs"]) / len(images)
            rows[b] = {"macs": macs,
                       "network": best_of(lambda: early_exit_predict(runner.model, x, thresholds)),
                       "in-process": best_of(lambda: loaded.predict(frame, params={"budget": b})),
                       "served": best_of(lambda: server.invoke(body[b]), repeats=3)}
    finally:
        server.stop()
    top = rows[budgets[-1]]
    print(f"\n1. exported MSDNet, {count} CIFAR-10 test JPEGs per request; reference: the request at {budgets[-1] / 1e6:.2f} "
          f"MMACs (mean {top['macs'] / 1e6:.2f} MMACs per image)")
    print(f"{'budget MMACs':>12} {'mean MMACs':>10} {'predicted':>9}  " + "  ".join(f"{m + ' measured/pred.':>26}"
                                                                             for m in ("network", "in-process", "served")))
    for b in budgets[:-1]:
        r = rows[b]
        predicted = top["macs"] / r["macs"]
        cells = [f"{top[m] / r[m]:>6.2f}× / {predicted:.2f}× = {top[m] / r[m] / predicted:>5.2f}" for m in
                 ("network", "in-process", "served")]
        print(f"{b / 1e6:>12.2f} {r['macs'] / 1e6:>10.2f} {predicted:>8.2f}×  " + "  ".join(f"{c:>26}" for c in cells))


def adn_bench(checkpoint: Path):
    from adaptnet.deploy.latency import per_image_ms
    from adaptnet.deploy.subnet import extract_subnet
    from adaptnet.loop.evaluate import load_checkpoint_model
    from adaptnet.metrics.costs import skip_string, subnet_costs

    _, data, model = load_checkpoint_model(checkpoint, "cpu")
    images = next(iter(data.test))[0][:128]
    costs = {c.skip: c for c in subnet_costs(model, images.shape[-1])}
    rows = []
    for skip in model.skip_configs():
        static = extract_subnet(model, skip)
        rows.append((skip_string(skip), costs[skip_string(skip)].macs, per_image_ms(static, images[:32], 1),
                     per_image_ms(static, images, 64)))
    super_row = rows[0]
    print(f"\n2. ADN sub-networks ({model.__class__.__name__}), static, ms per image on CPU")
    print(f"{'skip':>5} {'MMACs':>8} {'b1 ms':>7} {'b64 ms':>7} {'MACs speed-up':>13} {'b1 measured/pred.':>18} "
          f"{'b64 measured/pred.':>18}")
    for name, macs, b1, b64 in rows:
        predicted = super_row[1] / macs
        print(f"{name:>5} {macs / 1e6:>8.2f} {b1:>7.3f} {b64:>7.3f} {predicted:>12.2f}× "
              f"{super_row[2] / b1 / predicted:>18.2f} {super_row[3] / b64 / predicted:>18.2f}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--msdnet", type=Path)
    p.add_argument("--adn", type=Path)
    p.add_argument("--images", type=int, default=256, help="test JPEGs per request")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        msd, adn = (args.msdnet, args.adn) if args.msdnet and args.adn else train_tiny(work / "runs")
        print(f"torch threads: {torch.get_num_threads()}")
        msdnet_bench(args.msdnet or msd, work, args.images)
        adn_bench(args.adn or adn)


if __name__ == "__main__":
    main()
