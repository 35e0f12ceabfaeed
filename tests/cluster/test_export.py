"""`adaptnet export` → a real `mlflow models serve` process queried over HTTP with real CIFAR-10 JPEGs:
the served early-exit predictions equal `adaptnet evaluate`'s at three budgets, the mean cost per image is
the held-out-calibrated one, an ADN export is the static sub-network, and bad input is one clear line."""
import base64
import csv
import json
import math
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from adaptnet.cli import main as cli
from adaptnet.cluster.tracking.serve import LocalModelServer
from adaptnet.loop import fit, load_config
from adaptnet.loop.checkpoint import load_checkpoint, save_checkpoint
from adaptnet.loop.evaluate import load_checkpoint_model
from adaptnet.loop.trainer import best_checkpoint

REPO = Path(__file__).resolve().parents[2]
CIFAR_MIRROR = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
pytestmark = pytest.mark.skipif(not CIFAR_MIRROR.exists(), reason="needs the CIFAR-10 JPEG mirror (real encoded images)")
SMALL = ["data.train_subset=512", "data.holdout=256", "data.test_subset=160", "train.epochs=1", "train.batch_size=32",
         "train.progress=false", f"data.dataset={CIFAR_MIRROR}"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    msd = fit(load_config("cifar10-smoke", [f"output_dir={root}", "name=msd", "model.name=msdnet_cifar_budgeted",
                                            "model.args={n_blocks: 3, n_channels: 8}", *SMALL]))
    adn = fit(load_config("cifar10-resnet56-adn", [f"output_dir={root}", "name=adn", *SMALL]))
    return root, best_checkpoint(msd.run_dir), best_checkpoint(adn.run_dir)


def jpegs_of(checkpoint):
    """The test images of a run as the JPEG files they were decoded from, checked pixel for pixel."""
    _, data, _ = load_checkpoint_model(checkpoint, "cpu")
    found = []
    with tarfile.open(CIFAR_MIRROR) as tar:  # the dataset's order: by class folder, file order within a class
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and len(parts) >= 3 and parts[-3] == "test":
                found.append((parts[-2], tar.extractfile(member).read()))
    found.sort(key=lambda item: item[0])
    from adaptnet.deploy.preprocess import decode

    chosen = [found[i][1] for i in data.test.indices.tolist()]
    for data_bytes, i in zip(chosen, data.test.indices.tolist()):  # the same pixels as the dataset's cache
        assert torch.equal(decode(data_bytes), data.test.images[i])
    return chosen, data


class Served(LocalModelServer):
    """The exported model served on a free loopback port; `invoke` gives (HTTP status, predictions or message)."""

    def invoke(self, images: list[bytes], **params) -> tuple[int, dict | str]:
        body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(b).decode()] for b in images]}}
        if params:
            body["params"] = params
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/invocations", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read())["predictions"]
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())["message"]



def _evaluate_predictions(checkpoint, budgets, tmp_path) -> dict[float, tuple[list[int], list[int]]]:
    """`adaptnet evaluate --predictions`: per budget, each test image's class and exit."""
    path = tmp_path / "predictions.csv"
    assert cli(["evaluate", str(checkpoint), "--budgets", ",".join(map(str, budgets)), "--device", "cpu",
                "--predictions", str(path)]) == 0
    out = {b: ([], []) for b in budgets}
    for row in csv.DictReader(open(path)):
        out[float(row["budget"])][0].append(int(row["class"]))
        out[float(row["budget"])][1].append(int(row["exit"]))
    return out


def test_served_early_exit_equals_evaluate_at_three_budgets_and_costs_what_was_calibrated(runs, tmp_path,
                                                                                         port_factory):
    import mlflow.pyfunc

    _, checkpoint, _ = runs
    images, data = jpegs_of(checkpoint)
    costs = json.loads((checkpoint.parents[1] / "costs.json").read_text())
    macs = [e["macs"] for e in costs["exits"]]
    budgets = [macs[0] + f * (macs[-1] - macs[0]) for f in (0.2, 0.5, 0.95)]
    model_dir = tmp_path / "model"
    assert cli(["export", str(checkpoint), "--budget", ",".join(map(str, budgets)), "--out", str(model_dir)]) == 0
    card = json.loads((model_dir / "artifacts" / "model_card.json").read_text())
    assert [b["budget"] for b in card["budgets"]] == budgets and len(card["exits"]) == 3
    expected = _evaluate_predictions(checkpoint, budgets, tmp_path)
    loaded = mlflow.pyfunc.load_model(str(model_dir))
    assert loaded.metadata.get_params_schema().to_dict()[0]["name"] == "budget"
    server = Served(model_dir, port_factory(), tmp_path / "serve.log")
    try:
        shown = []
        for budget, point in zip(budgets, card["budgets"]):
            status, rows = server.invoke(images, budget=budget)
            assert status == 200, rows
            classes, exits = [r["class"] for r in rows], [r["exit"] for r in rows]
            assert (classes, exits) == expected[budget]  # 100% equal, image by image
            in_process = loaded.predict(__import__("pandas").DataFrame({"image": images}), params={"budget": budget})
            assert in_process["class"].tolist() == classes and in_process["exit"].tolist() == exits
            # mean cost per image vs the held-out expected cost: within 4 standard errors of both samples
            shares = torch.tensor(point["holdout_exit_counts"], dtype=torch.float64) / sum(point["holdout_exit_counts"])
            cost = torch.tensor(macs, dtype=torch.float64)
            sd = math.sqrt(float((shares * (cost - point["holdout_cost"]) ** 2).sum()))
            se = sd * math.sqrt(1 / len(images) + 1 / sum(point["holdout_exit_counts"]))
            served_cost = sum(r["macs"] for r in rows) / len(rows)
            assert abs(served_cost - point["holdout_cost"]) <= 4 * se + 1, (budget, served_cost, point["holdout_cost"], se)
            assert served_cost == pytest.approx(point["test_cost"])  # what evaluate's thresholds give on test
            shown.append(len(set(exits)))
        assert max(shown) > 1  # at least one budget really splits the batch between exits
        status, message = server.invoke(images[:2] + [b"not an image"], budget=budgets[0])
        assert status == 400 and "image: row 2 is not a decodable image" in message
        status, message = server.invoke(images[:2], budget=macs[0] / 2)
        assert status == 400 and "budget:" in message and "below the first exit's cost" in message
    finally:
        server.stop()
    assert server.proc.poll() is not None


def test_bad_export_input_is_one_line_exit_2_and_writes_nothing(runs, tmp_path, capsys):
    root, checkpoint, adn = runs
    state = load_checkpoint(checkpoint)  # the same run as if trained without a held-out split
    state["config"]["data"]["holdout"] = 0
    state["split"] = {**state["split"], "holdout": torch.zeros(0, dtype=torch.long)}
    no_holdout = save_checkpoint(tmp_path / "no_holdout.pt", state)
    costs = json.loads((checkpoint.parents[1] / "costs.json").read_text())
    first = costs["exits"][0]["macs"]
    cases = [([str(no_holdout), "--budget", "1e9"], "data.holdout:"),
             ([str(checkpoint), "--budget", f"{first - 1}"], "budget:"),
             ([str(checkpoint), "--skip", "TTF"], "skip:"),
             ([str(adn), "--skip", "TTFF"], "skip: expected 3 letters"),
             ([str(adn), "--budget", "1e9"], "budget:")]
    for i, (args, field) in enumerate(cases):
        out = tmp_path / f"out{i}"
        capsys.readouterr()
        assert cli(["export", *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"adaptnet: error: {field}") and "\n" not in err, err
        assert not out.exists()


def test_exported_adn_subnetwork_is_the_static_network_and_predicts_as_the_super_net_with_that_skip(runs, tmp_path):
    import mlflow.pyfunc
    import pandas as pd

    from adaptnet.deploy.preprocess import batch

    _, _, checkpoint = runs
    images, data = jpegs_of(checkpoint)
    model_dir = tmp_path / "adn"
    assert cli(["export", str(checkpoint), "--skip", "TFT", "--out", str(model_dir)]) == 0
    card = json.loads((model_dir / "artifacts" / "model_card.json").read_text())
    rows = {r["skip"]: r for r in card["subnets"]}
    assert card["skip"] == "TFT" and card["macs"] == rows["TFT"]["macs"] < rows["FFF"]["macs"]
    state = torch.load(model_dir / "artifacts" / "bundle.pt", weights_only=True)["state"]
    assert not any("norm_skip" in k for k in state)
    assert sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))) \
        == card["params"]
    _, _, supernet = load_checkpoint_model(checkpoint, "cpu")
    from adaptnet.deploy.preprocess import transform

    mean, std = [t.flatten().div(255).tolist() for t in (data.test.mean, data.test.std)]
    x = batch(images, transform("cifar", None, 32, mean, std))
    assert torch.allclose(x, torch.cat([b for b, _ in data.test]), atol=1e-5)  # the run's own preprocessing
    with torch.no_grad():
        expected = supernet(x, skip=(True, False, True)).argmax(1).tolist()
    out = mlflow.pyfunc.load_model(str(model_dir)).predict(pd.DataFrame({"image": images}))
    assert out["class"].tolist() == expected and set(out["macs"]) == {card["macs"]}


def test_latency_objectives_are_measured_per_image_for_every_deployable_output(runs):
    from adaptnet.deploy.latency import latency_metrics

    _, msd, adn = runs
    costs = [e["macs"] for e in json.loads((msd.parents[1] / "costs.json").read_text())["exits"]]
    found = latency_metrics(msd, (costs[0] / 2, costs[1]), batch_sizes=(1, 8), device="cpu", single_images=4,
                            repeats=1)
    assert set(found) == {f"final/latency_ms_{n}_b{b}" for n in ("full", "budget2") for b in (1, 8)}  # budget1: too low
    assert all(v > 0 for v in found.values())
    found = latency_metrics(adn, batch_sizes=(1, 8), device="cpu", single_images=4, repeats=1)
    assert set(found) == {f"final/latency_ms_{n}_b{b}" for n in ("super", "base") for b in (1, 8)}
    assert all(v > 0 for v in found.values())


def test_a_streaming_imagenet_run_exports_and_predicts_what_evaluate_predicts(imagenet_tree, tmp_path):
    """A run on the ImageNet sample through the streaming loader (mixed sizes, greyscale JPEGs, Resize +
    CenterCrop) exports, and the exported model classifies the test JPEGs exactly as `adaptnet evaluate` does."""
    import mlflow.pyfunc
    import pandas

    run = fit(load_config("cifar10-smoke", [
        "name=inet", f"output_dir={tmp_path}", f"data.dataset={imagenet_tree}", "data.loader=torch", "data.workers=0",
        "data.holdout=200", "data.train_subset=100", "data.test_subset=100", "data.transform=imagenet",
        "data.augment.train_crop=32", "data.augment.eval_resize=36", "data.augment.eval_crop=32",
        "model.name=msdnet_cifar_budgeted", "model.args={n_blocks: 3, n_channels: 8}", "train.epochs=1",
        "train.batch_size=50", "train.progress=false"]))
    checkpoint = best_checkpoint(run.run_dir)
    macs = [e["macs"] for e in json.loads((run.run_dir / "costs.json").read_text())["exits"]]
    budgets = [(macs[0] + macs[-1]) / 2, macs[-1]]
    model_dir = tmp_path / "model"
    assert cli(["export", str(checkpoint), "--budget", ",".join(map(str, budgets)), "--out", str(model_dir)]) == 0
    expected = _evaluate_predictions(checkpoint, budgets, tmp_path)
    _, data, _ = load_checkpoint_model(checkpoint, "cpu")
    files = data.test.files
    images = [files.reader.read(ref) for ref in files.refs]  # the test split's JPEGs, in evaluation order
    loaded = mlflow.pyfunc.load_model(str(model_dir))
    for budget in budgets:
        rows = loaded.predict(pandas.DataFrame({"image": images}), params={"budget": budget})
        assert (rows["class"].tolist(), (rows["exit"]).tolist()) == expected[budget]
