import json

import pytest
import torch

from adaptnet.loop import fit, load_config
from adaptnet.loop.trainer import checkpoint_path, lr_factor


def _config(tmp_path, spec, name, *overrides):
    return load_config("cifar10-smoke", [f"name={name}", f"output_dir={tmp_path}", f"data.dataset={spec}",
                                         "train.progress=false", *overrides])


def test_short_real_training_beats_chance(tmp_path, cifar10_spec):
    cfg = _config(tmp_path, cifar10_spec, "short", "data.train_subset=1000", "data.holdout=500",
                  "data.test_subset=500", "train.epochs=2")  # ~25% here
    result = fit(cfg)
    best_exit = max(result.metrics[f"test/top1_exit{k}"] for k in range(1, 8))
    assert best_exit > 20.0, result.metrics  # chance is 10%
    assert len(result.history) == 2
    costs = json.loads((result.run_dir / "costs.json").read_text())
    assert costs["convention"] == "reference" and [e["exit"] for e in costs["exits"]] == list(range(1, 8))
    saved = torch.load(checkpoint_path(result.run_dir), weights_only=False)
    assert {"model", "optimizer", "scheduler", "epoch", "config", "split"} <= set(saved)
    assert len(saved["split"]["holdout"]) == 500 and len(saved["split"]["train"]) == 1000


class _Crash(RuntimeError):
    pass


class _CrashAfterFirstEpoch:
    def on_epoch_end(self, epoch, metrics, checkpoint):
        raise _Crash


def test_resume_gives_the_same_next_epoch_state(tmp_path, cifar10_spec):
    tiny = ["data.train_subset=256", "data.holdout=64", "data.test_subset=64", "train.batch_size=32",
            "train.epochs=2", "train.threads=1", "model.name=msdnet_cifar_budgeted"]
    straight = fit(_config(tmp_path, cifar10_spec, "straight", *tiny))
    with pytest.raises(_Crash):
        fit(_config(tmp_path, cifar10_spec, "resumed", *tiny), callbacks=[_CrashAfterFirstEpoch()])
    assert torch.load(checkpoint_path(tmp_path / "resumed"), weights_only=False)["epoch"] == 0
    resumed = fit(_config(tmp_path, cifar10_spec, "resumed", *tiny))

    a = torch.load(checkpoint_path(straight.run_dir), weights_only=False)
    b = torch.load(checkpoint_path(resumed.run_dir), weights_only=False)
    assert a["epoch"] == b["epoch"] == 1
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    momentum_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    momentum_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(momentum_a, momentum_b))
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    assert [m["epoch"] for m in resumed.history] == [1, 2]
    assert resumed.metrics["test/top1_exit5"] == straight.metrics["test/top1_exit5"]


def test_the_test_split_is_evaluated_every_test_every_epochs_and_at_the_last(tmp_path, cifar10_spec, capsys):
    result = fit(_config(tmp_path, cifar10_spec, "sparse", "data.train_subset=64", "data.holdout=32",
                         "data.test_subset=32", "train.batch_size=32", "train.epochs=3", "train.test_every=2",
                         "train.threads=1", "model.name=msdnet_cifar_budgeted"))
    tested = [m["epoch"] for m in result.history if "test/top1_exit5" in m]
    assert tested == [2, 3] and all("holdout/top1_exit5" in m for m in result.history)
    assert "epoch 1 | loss" in capsys.readouterr().out  # the epoch line without test numbers


def test_a_checkpoint_without_amp_resumes_with_float16_amp_on(tmp_path, cifar10_spec):
    """A run written on a CPU (or with AMP off) saves an empty GradScaler state; resumed where float16 AMP is on
    (a GPU node), the enabled scaler starts afresh instead of refusing the checkpoint. A saved state is kept."""
    from adaptnet.loop.checkpoint import load_checkpoint, restore_scaler

    run = fit(_config(tmp_path, cifar10_spec, "no-amp", "data.train_subset=64", "data.holdout=32",
                      "data.test_subset=32", "train.batch_size=32", "train.epochs=1", "model.name=msdnet_cifar_budgeted",
                      "train.amp=true"))  # on a CPU: AMP is off, the scaler disabled
    saved = load_checkpoint(checkpoint_path(run.run_dir))["scaler"]
    assert saved == {}
    scaler = torch.amp.GradScaler("cpu", enabled=True)  # the enabled scaler of a float16 AMP run
    restore_scaler(scaler, saved)
    assert scaler.get_scale() == torch.amp.GradScaler("cpu", enabled=True).get_scale()
    used = torch.amp.GradScaler("cpu", init_scale=1024.0, enabled=True)
    used.scale(torch.ones(1))  # makes its state
    restore_scaler(scaler, used.state_dict())
    assert scaler.get_scale() == 1024.0


def test_multistep_schedule_drops_at_half_and_three_quarters():
    cfg = load_config("cifar100-paper")
    factors = {epoch: lr_factor(cfg, epoch * 10, 10) for epoch in (0, 149, 150, 224, 225, 299)}
    assert factors == pytest.approx({0: 1, 149: 1, 150: 0.1, 224: 0.1, 225: 0.01, 299: 0.01})
    imagenet = load_config("imagenet-paper")
    assert [lr_factor(imagenet, e, 1) for e in (29, 30, 59, 60)] == pytest.approx([1, 0.1, 0.1, 0.01])
    cosine = load_config("cifar10-smoke")
    assert lr_factor(cosine, 0, 10) == 1 and lr_factor(cosine, 10, 10) == pytest.approx(0.5)


@pytest.mark.parametrize("content", [b"not a checkpoint", None])
def test_corrupt_or_incompatible_checkpoint_is_one_clear_line(tmp_path, content):
    import subprocess
    import sys

    path = tmp_path / "last.pt"
    if content is None:
        torch.save({"weights": torch.zeros(2)}, path)  # loads, but is not an adaptnet checkpoint
    else:
        path.write_bytes(content)
    result = subprocess.run([sys.executable, "-m", "adaptnet.cli", "evaluate", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    message = result.stderr.strip()
    assert message.startswith("adaptnet: error: checkpoint:") and "\n" not in message
    assert ("corrupt" in message) if content else ("lacks model" in message)


def test_channels_last_trains_the_same_numbers(tmp_path, cifar10_spec):
    tiny = ["data.train_subset=64", "data.holdout=32", "data.test_subset=32", "train.batch_size=32", "train.epochs=1",
            "train.threads=1", "model.name=msdnet_cifar_budgeted"]
    plain = fit(_config(tmp_path, cifar10_spec, "nchw", *tiny))
    nhwc = fit(_config(tmp_path, cifar10_spec, "nhwc", *tiny, "train.channels_last=true"))
    assert nhwc.metrics["train/loss"] == pytest.approx(plain.metrics["train/loss"], rel=1e-3)


def test_training_steps_make_no_host_sync(tmp_path, cifar10_spec, monkeypatch):
    """Per-step metrics stay on the device: an epoch of 8 steps reads as many tensors back to the host
    (`.item()`, `float()`, `.tolist()`, ...) as an epoch of 2 steps, i.e. none per step (progress bar off)."""
    counted = {"n": 0}
    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, **kwargs):
            counted["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)

    def syncs(steps: int) -> int:
        cfg = _config(tmp_path, cifar10_spec, f"sync{steps}", f"data.train_subset={16 * steps}", "data.holdout=16",
                      "data.test_subset=16", "train.batch_size=16", "train.epochs=1", "train.threads=1",
                      "model.name=msdnet_cifar_budgeted")
        counted["n"] = 0
        fit(cfg)
        return counted["n"]

    few, many = syncs(2), syncs(8)
    assert few > 0 and many == few, (few, many)
