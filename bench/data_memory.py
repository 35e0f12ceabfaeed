"""Peak RSS of one rank reading one epoch, streaming (DataLoader twin) vs memory (decoded-tensor cache), at
dataset sizes N and 10·N (the ImageNet sample's files repeated). Goal: streaming flat within 20 %, while the
memory path grows with N. Each measurement runs in a fresh process; sizes are interleaved. Asserts nothing.

Usage: python bench/data_memory.py [N]   (default 1000; needs ../shared/data/imagenet-sample-1000.tar)
"""
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from PIL import Image

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample-1000.tar"
CHILD = r"""
import json, resource, sys
from adaptnet.data import prepare_data
from adaptnet.loop.config import AugmentConfig, DataConfig
cfg = DataConfig(dataset=sys.argv[1], loader=sys.argv[2], holdout=0, workers=2, transform="imagenet",
                 augment=AugmentConfig(train_crop=64, eval_resize=64, eval_crop=64), cache_dir=sys.argv[3])
data = prepare_data(cfg, 64, 64, seed=0)
n = sum(len(y) for _, y in data.train)
del data
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"images": n, "main_mb": me.ru_maxrss / 1024, "worker_mb": kids.ru_maxrss / 1024}))
"""


def build(root: Path, files: list[Path], copies: int, side: int | None) -> Path:
    """An ImageFolder with `copies` × the files (resized to side×side when given, for the memory path)."""
    for c in range(copies):
        for f in files:
            wnid = f.name.split("_", 1)[0]
            for split in ("train", "val"):
                target = root / split / wnid / f"{c}_{f.name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                if side:
                    if c == 0 or not (root / split / wnid / f"0_{f.name}").exists():
                        Image.open(f).convert("RGB").resize((side, side)).save(target)
                    else:
                        target.symlink_to(root / split / wnid / f"0_{f.name}")
                else:
                    target.symlink_to(f)
    return root


def measure(tree: Path, loader: str, cache: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(tree), loader, str(cache)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with tarfile.open(SAMPLE) as tar:
            tar.extractall(tmp / "raw", filter="data")
        files = sorted((tmp / "raw").rglob("*.JPEG"))[:n]
        trees = {(loader, k): build(tmp / f"{loader}{k}", files, k, None if loader == "torch" else 64)
                 for loader in ("torch", "memory") for k in (1, 10)}
        rows = {}
        for k in (1, 10):  # interleaved: both loaders at N, then both at 10·N
            for loader in ("torch", "memory"):
                rows[(loader, k)] = measure(trees[(loader, k)], loader, tmp / f"cache-{loader}{k}")
        print(f"one rank, one epoch, batch 64 ({n} and {10 * n} training images; streaming: 2 decode processes)")
        print(f"{'loader':>8} {'images':>7} {'main MB':>8} {'worker MB':>10} {'rank MB':>8}")
        def rank_mb(loader: str, r: dict) -> float:  # the memory loader starts no decode processes
            return r["main_mb"] + (2 * r["worker_mb"] if loader == "torch" else 0)

        for (loader, k), r in rows.items():
            workers = f"{r['worker_mb']:>10.0f}" if loader == "torch" else f"{'-':>10}"
            print(f"{loader:>8} {r['images']:>7} {r['main_mb']:>8.0f} {workers} {rank_mb(loader, r):>8.0f}")
        for loader in ("torch", "memory"):
            a, b = rows[(loader, 1)], rows[(loader, 10)]
            print(f"{loader}: peak RSS at 10·N / at N = {rank_mb(loader, b) / rank_mb(loader, a):.2f}"
                  + ("  (goal: ≤ 1.20)" if loader == "torch" else "  (grows with N)"))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
