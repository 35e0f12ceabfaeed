"""The checks a lent GPU runs, in one script (a few minutes on one GPU); without CUDA it says so in one line and
exits 0. It prints one table:

  step      training images/s of ResNet50-ADN and MSDNet (ImageNet, 224 px): fp32, AMP (bfloat16, or float16 where
            the GPU lacks it), AMP + channels_last, AMP + torch.compile; each variant's loss must be finite
  decode    JPEG images/s on the ImageNet sample: libjpeg-turbo on one CPU thread vs nvjpeg on the GPU (batched)
  ddp       `adaptnet train --workers 1 --gpus-per-worker 1` through Ray Train (NCCL) on the ImageNet sample:
            exit code and seconds
  feed      a ResNet50-ADN step fed by the streaming loader (4 decode processes), decoding on the CPU and with
            nvjpeg (data.decode: gpu): images/s and the share of the time the GPU computes rather than waits
  memory    the memory loader's batches from a GPU-resident uint8 cache equal those of the host cache (pinned
            copies), and both batch rates

  python bench/gpu_check.py [--data ../shared/data/imagenet-sample-1000.tar] [--steps 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "imagenet-sample-1000.tar"


def sync():
    import torch

    torch.cuda.synchronize()


def step_rates(model_name: str, steps: int, batch: int) -> dict[str, float]:
    """images/s of a plain training step (forward, summed exit losses, backward, SGD) per variant."""
    import torch

    from adaptnet.models import create_model

    bf16 = torch.cuda.is_bf16_supported()
    amp = torch.bfloat16 if bf16 else torch.float16
    rates = {}
    for variant in ("fp32", "amp", "amp+channels_last", "amp+compile"):
        torch.manual_seed(0)
        fmt = torch.channels_last if "channels_last" in variant else torch.contiguous_format
        model = create_model(model_name, num_classes=1000).cuda().to(memory_format=fmt).train()
        trained = torch.compile(model) if "compile" in variant else model
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        scaler = torch.amp.GradScaler("cuda", enabled=variant != "fp32" and amp == torch.float16)
        x = torch.randn(batch, 3, 224, 224, device="cuda").contiguous(memory_format=fmt)
        y = torch.randint(0, 1000, (batch,), device="cuda")
        times = []
        for i in range(steps + 3):  # 3 warm-up steps (compile happens there)
            sync()
            start = time.perf_counter()
            with torch.autocast("cuda", dtype=amp, enabled=variant != "fp32"):
                out = trained(x)
                logits = out if isinstance(out, (list, tuple)) else [out]
                loss = sum(torch.nn.functional.cross_entropy(z.float(), y) for z in logits)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            sync()
            if i >= 3:
                times.append(time.perf_counter() - start)
        if not torch.isfinite(loss):
            raise RuntimeError(f"{model_name} {variant}: loss {loss.item()}")
        rates[variant] = batch / statistics.median(times)
        del model, trained, optimizer
        torch.cuda.empty_cache()
    return rates


def decode_rates(files: list[bytes], rounds: int = 3) -> dict[str, float]:
    import torch
    from torchvision.io import decode_jpeg

    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in files]
    torch.set_num_threads(1)
    rates = {"cpu (libjpeg-turbo, 1 thread)": [], "gpu (nvjpeg, batched)": []}
    for _ in range(rounds):  # interleaved rounds
        start = time.perf_counter()
        for t in tensors:
            decode_jpeg(t, mode=_rgb())
        rates["cpu (libjpeg-turbo, 1 thread)"].append(len(tensors) / (time.perf_counter() - start))
        sync()
        start = time.perf_counter()
        for i in range(0, len(tensors), 64):
            decode_jpeg(tensors[i:i + 64], mode=_rgb(), device="cuda")
        sync()
        rates["gpu (nvjpeg, batched)"].append(len(tensors) / (time.perf_counter() - start))
    return {k: statistics.median(v) for k, v in rates.items()}


def _rgb():
    from torchvision.io import ImageReadMode

    return ImageReadMode.RGB


def jpeg_files(sample: Path) -> list[bytes]:
    """The sample's baseline JPEGs (a few ImageNet files are PNG or CMYK under a .JPEG name: nvjpeg skips them)."""
    found = []
    with tarfile.open(sample) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".JPEG"):
                data = tar.extractfile(member).read()
                if data[:2] == b"\xff\xd8":
                    found.append(data)
    return found


def imagenet_tree(sample: Path, root: Path) -> Path:
    """train/ and val/ of the sample (the same files), class folders by WordNet id."""
    with tarfile.open(sample) as tar:
        tar.extractall(root / "raw", filter="data")
    for image in sorted((root / "raw").rglob("*.JPEG")):
        for split in ("train", "val"):
            folder = root / "tree" / split / image.name.split("_", 1)[0]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / image.name).symlink_to(image)
    return root / "tree"


def ddp_run(tree: Path, work: Path) -> tuple[int, float]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "adaptnet.cli", "train", "resnet50-adn-paper", f"data.dataset={tree}", "data.holdout=100",
         "data.train_subset=512", "data.test_subset=200", "train.epochs=1", "train.batch_size=64", "name=gpu-ddp",
         f"output_dir={work / 'runs'}", "train.progress=false", "--workers", "1", "--gpus-per-worker", "1",
         "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}", "--storage", str(work / "ray_results")],
        cwd=work, env={**os.environ, "PYTHONPATH": str(REPO / "platform")}, capture_output=True, text=True, timeout=900)
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
    return done.returncode, time.perf_counter() - start


def fed_step(tree: Path, steps: int, batch: int, decode: str) -> tuple[float, float]:
    """(images/s, GPU share): a ResNet50-ADN AMP step fed by the streaming loader (`decode`: data.decode, cpu or
    gpu); the share is the time spent in the step (synchronised) over the whole loop, the rest being waits for
    the next batch (and, with gpu, the nvjpeg decode and crops in this process)."""
    import torch

    from adaptnet.loop import build_config, read_yaml
    from adaptnet.loop.build import build_training
    from adaptnet.loop.trainer import build_optimizer
    from adaptnet.data import prepare_data

    cfg = build_config(read_yaml("resnet50-adn-paper"), [f"data.dataset={tree}", "data.holdout=100", "data.workers=4",
                                                         "data.loader=torch", f"data.decode={decode}"])
    data = prepare_data(cfg.data, batch, batch, 0, device="cuda")
    model, task = build_training(cfg, data.num_classes, load_pretrained=False)
    model = model.cuda().to(memory_format=torch.channels_last).train()
    optimizer = build_optimizer(cfg, model)
    amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    busy = images = 0.0
    data.train.set_epoch(0)
    started = None
    for i, (x, y) in enumerate(data.train):
        if i == 2:  # after the decode processes' start-up
            sync()
            started, busy, images = time.perf_counter(), 0.0, 0.0
        sync()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=amp):
            task(model, x.contiguous(memory_format=torch.channels_last), y,
                 lambda loss: scaler.scale(loss).backward())
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        sync()
        busy += time.perf_counter() - t0
        images += len(y)
        if i >= steps + 2:
            break
    total = time.perf_counter() - started
    return images / total, busy / total


def memory_loader_check(batches: int = 50, batch: int = 256) -> tuple[bool, float, float]:
    """(same batches, host-cache batches/s, GPU-cache batches/s) for a CIFAR-size uint8 cache with crop + flip."""
    import torch

    from adaptnet.data.loader import TensorBatches

    images = torch.randint(0, 256, (batches * batch, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (len(images),))
    out = []
    for cache in (images, images.cuda()):
        loader = TensorBatches(cache, labels, batch, (0.5,) * 3, (0.25,) * 3, augment=True, shuffle=True, device="cuda")
        sync()
        started = time.perf_counter()
        got = [x for x, _ in loader]
        sync()
        out.append((got, len(got) / (time.perf_counter() - started)))
    (host, host_rate), (gpu, gpu_rate) = out
    return all(torch.equal(a, b) for a, b in zip(host, gpu)), host_rate, gpu_rate


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=SAMPLE)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: needs a CUDA GPU (none visible here); nothing measured")
        return 0
    rows = [("device", torch.cuda.get_device_name(0), f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")]
    for name in ("resnet50_adn", "msdnet_imagenet_step4"):
        for variant, rate in step_rates(name, args.steps, args.batch).items():
            rows.append((f"step {name}", variant, f"{rate:,.0f} img/s"))
    same, host_rate, gpu_rate = memory_loader_check()
    rows.append(("memory", "GPU-resident cache = host cache", f"{'equal' if same else 'DIFFERENT'}; "
                 f"{host_rate:,.0f} vs {gpu_rate:,.0f} batches/s of 256"))
    if args.data.exists():
        for label, rate in decode_rates(jpeg_files(args.data)).items():
            rows.append(("decode", label, f"{rate:,.0f} img/s"))
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
            tree = imagenet_tree(args.data, Path(folder))
            code, seconds = ddp_run(tree, Path(folder))
            rows.append(("ddp", "1 worker, NCCL, Ray Train", f"exit {code}, {seconds:.0f} s"))
            for decode in ("cpu", "gpu"):
                rate, share = fed_step(tree, args.steps, args.batch, decode)
                rows.append(("feed", f"streaming loader (data.decode {decode}) → ResNet50-ADN AMP step",
                             f"{rate:,.0f} img/s, GPU busy {share:.0%}"))
    else:
        rows.append(("decode/ddp/feed", f"no sample at {args.data}", "skipped"))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, width)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
