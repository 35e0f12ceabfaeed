"""Learning through the streaming source: real CIFAR-10 images re-encoded at mixed sizes (an ImageNet-like tree),
trained through the DataLoader twin with the ImageNet transforms, end well above chance."""
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adaptnet.loop import load_config, run

PER_CLASS = {"train": 250, "test": 50}


@pytest.fixture(scope="module")
def mixed_size_cifar(tmp_path_factory, cifar10_spec) -> Path:
    if not Path(cifar10_spec).is_file():
        pytest.skip("needs the CIFAR-10 JPEG mirror")
    root = tmp_path_factory.mktemp("mixed") / "tree"
    rng = np.random.default_rng(0)
    taken: dict[tuple[str, str], int] = {}
    with tarfile.open(cifar10_spec) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 3 or parts[-3] not in PER_CLASS:
                continue
            split, cls = parts[-3], parts[-2]
            if taken.get((split, cls), 0) >= PER_CLASS[split]:
                continue
            taken[(split, cls)] = taken.get((split, cls), 0) + 1
            side_w, side_h = (int(v) for v in rng.integers(24, 72, 2))
            image = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
            folder = root / ("val" if split == "test" else split) / cls
            folder.mkdir(parents=True, exist_ok=True)
            image.resize((side_w, side_h), Image.BILINEAR).save(folder / Path(member.name).name, quality=90)
    return root


def test_mixed_size_jpegs_train_through_the_streaming_source_far_above_chance(mixed_size_cifar, tmp_path):
    cfg = load_config("cifar10-smoke", [
        "name=stream", f"output_dir={tmp_path}", f"data.dataset={mixed_size_cifar}", "data.loader=auto",
        "data.holdout=200", "data.train_subset=null", "data.test_subset=null", "data.workers=2",
        "data.augment.train_crop=32", "data.augment.eval_resize=36", "data.augment.eval_crop=32",
        "model.name=msdnet_cifar_budgeted", "model.args={n_blocks: 3, n_channels: 8}", "train.epochs=4", "train.batch_size=64", "train.progress=false",
        "optim.lr=0.1"])
    (result,) = run(cfg)
    assert result.history[0]["train/samples"] == 2300
    top1 = result.metrics["test/top1_exit3"]
    print(f"streaming, mixed sizes: test top-1 of the last exit (of 3) after 4 epochs {top1:.1f}% (chance 10%)")
    assert top1 > 25
    # the run exports (streaming loaders normalise uint8 batches with plain mean/std values) and the exported
    # model classifies a JPEG of the tree as the trained network does
    from adaptnet.deploy.bundle import Runner, build_bundle, save_bundle
    from adaptnet.loop.evaluate import load_checkpoint_model
    from adaptnet.loop.trainer import best_checkpoint

    bundle = build_bundle(best_checkpoint(result.run_dir), [], device="cpu")
    _, data, _ = load_checkpoint_model(best_checkpoint(result.run_dir), "cpu")
    assert (bundle["mean"], bundle["std"]) == (pytest.approx(list(data.test.mean)), pytest.approx(list(data.test.std)))
    assert 0.2 < bundle["mean"][0] < 0.8 and 0.1 < bundle["std"][0] < 0.5  # the 0–1 scale
    image = next(p for p in (mixed_size_cifar / "val").rglob("*") if p.is_file()).read_bytes()
    assert Runner(save_bundle(bundle, tmp_path / "bundle.pt")).predict([image])["class"][0] in range(10)
