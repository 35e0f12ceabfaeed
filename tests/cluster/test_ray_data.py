"""Ray Data on a real local Ray with 2 Train workers: the ImageNet sample streamed end to end with the ImageNet
transforms, rank shards by sample id, the global batch, and IMTA's stage hand-off through S3 storage."""
import json
import shutil
from pathlib import Path

import boto3
import torch

from conftest import assert_evaluation_equals_one_process

from adaptnet.cluster.tracking.store import client
from adaptnet.cluster.run.job import SELECTED_FILE
from adaptnet.cluster.run.train import ClusterOptions, train_on_ray
from adaptnet.loop import load_config, stage_configs

SMALL_IMAGENET = ["data.transform=imagenet", "data.augment.train_crop=32", "data.augment.eval_resize=36",
                  "data.augment.eval_crop=32", "model.name=msdnet_cifar_budgeted", "train.progress=false"]


def test_imagenet_sample_through_ray_data_two_workers_global_batch(tmp_path, imagenet_tree, ray_cluster):
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config("cifar10-smoke", [
        "name=inet", f"output_dir={tmp_path / 'runs'}", f"data.dataset={imagenet_tree}", "data.loader=ray",
        "data.holdout=100", "data.train_subset=256", "data.test_subset=200", "train.epochs=2",
        "train.batch_size=64", *SMALL_IMAGENET])
    result = train_on_ray(cfg, ClusterOptions(workers=2, storage=str(tmp_path / "store"), tracking_uri=tracking,
                                              experiment="ray-data"))
    metrics = result.metrics
    # 256 images per epoch over 2 ranks of 32: 4 optimizer steps of 64 images in total.
    assert metrics["train/samples"] == 256 and metrics["train/steps"] == 4
    assert metrics["train/samples"] / metrics["train/steps"] == 64
    costs = json.loads((cfg.run_dir / "costs.json").read_text())
    assert costs["input_size"] == 32 and 0 <= metrics["test/top1_exit3"] <= 100
    (run,) = client(tracking).search_runs([client(tracking).get_experiment_by_name("ray-data").experiment_id])
    assert run.data.params["train.global_batch_size"] == "64" and run.data.params["train.per_worker_batch_size"] == "32"
    split = torch.load(cfg.run_dir / "split.pt", weights_only=True)
    assert len(split["holdout"]) == 100 and len(split["train"]) == 256
    assert_evaluation_equals_one_process(metrics, cfg.run_dir)  # each rank read its own evaluation shard


def test_ray_data_shards_are_disjoint_cover_each_epoch_in_a_new_order_and_reproduce(tmp_path, imagenet_tree, ray_cluster):
    import ray.train
    from ray.train.torch import TorchTrainer

    from adaptnet.cluster.run.trainer import trainer_data

    def _ids_per_rank(config):
        """A Train worker that records the sample ids of its train shard for 2 epochs (test-only loop; nested: pickled by value)."""
        import ray.train

        from adaptnet.cluster.run.ray_data import worker_data
        from adaptnet.loop import RunConfig

        cfg = RunConfig.model_validate(config["run"])
        ctx = ray.train.get_context()
        make = worker_data(config["ray_data"], ctx.get_world_rank(), ctx.get_world_size(), "cpu", with_ids=True)
        data = make(cfg.data, 16, 16, 0)
        seen = []
        for epoch in range(2):  # as the loop does
            data.train.set_epoch(epoch)
            seen.append([int(i) for _, _, ids in data.train for i in ids])
        Path(config["out"], f"rank{ctx.get_world_rank()}.json").write_text(json.dumps(seen))
        ray.train.report({"done": 1})

    cfg = load_config("cifar10-smoke", ["name=ids", f"output_dir={tmp_path}", f"data.dataset={imagenet_tree}",
                                        "data.loader=ray", "data.holdout=0", "data.train_subset=256", *SMALL_IMAGENET])

    def fit(out):
        out.mkdir()
        meta = trainer_data(cfg)
        TorchTrainer(_ids_per_rank, train_loop_config={"run": cfg.model_dump(), "out": str(out), "ray_data": meta},
                     scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                     run_config=ray.train.RunConfig(storage_path=str(tmp_path / "store"), name=out.name)).fit()
        return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)], ray.get(meta["plan"])

    ranks, plan = fit(tmp_path / "first")
    expected = sorted(range(len(plan.split["train"])))  # positions in the training list
    for epoch in range(2):
        a, b = ranks[0][epoch], ranks[1][epoch]
        assert len(a) == len(b) == 128 and set(a).isdisjoint(b) and sorted(a + b) == expected
    assert ranks[0][0] + ranks[1][0] != ranks[0][1] + ranks[1][1]  # reshuffled between epochs
    again, _ = fit(tmp_path / "again")
    assert again == ranks  # the same seed: the same order on every rank, epoch by epoch


def test_imta_stage_two_starts_from_stage_one_fetched_from_s3_storage(tmp_path, cifar10_spec, ray_cluster):
    boto3.client("s3").create_bucket(Bucket="handoff")
    options = ClusterOptions(workers=2, storage="s3://handoff/runs", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
                             experiment="handoff")
    cfg = load_config("cifar10-imta", ["name=imta", f"output_dir={tmp_path / 'runs'}", f"data.dataset={cifar10_spec}",
                                       "model.name=msdnet_cifar_budgeted", "data.train_subset=128", "data.holdout=32",
                                       "data.test_subset=32", "train.batch_size=32", "train.epochs=1",
                                       "train.progress=false"])
    stage1, stage2 = stage_configs(cfg)
    first = train_on_ray(stage1, options)
    selected = (Path(stage1.run_dir) / "checkpoints" / "best.pt").read_bytes()
    shutil.rmtree(stage1.run_dir)  # as if stage 1 had run on another node: nothing of it is on this disk
    second = train_on_ray(stage2, options, handoff=first.checkpoint)
    assert second.metrics["epoch"] == 1
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="handoff").get("Contents", [])]
    assert any(k.startswith("runs/stage1/checkpoint_") and k.endswith(SELECTED_FILE) for k in keys), keys
    fetched = Path(stage2.run_dir) / "handoff" / SELECTED_FILE
    assert fetched.read_bytes() == selected
    saved = json.loads((Path(stage2.run_dir) / "config.json").read_text())
    assert saved["imta"]["stage1_checkpoint"] == saved["data"]["split_from"] == str(fetched)


def test_every_loader_reads_one_tree_alike(tmp_path, ray_cluster):
    """memory, torch, tar shards and Ray Data over one tree with train/, val/ and test/: the same classes, split,
    held-out and test images and labels (val/ is the evaluation split, test/ is not read), and for the streaming
    loaders the same training epoch, sample by sample and crop by crop."""
    import numpy as np
    import ray
    from PIL import Image

    from adaptnet.cluster.run.ray_data import worker_data
    from adaptnet.data import prepare_data, streaming_plan
    from adaptnet.data.shards import write_shards
    from adaptnet.loop.config import DataConfig

    rng = np.random.default_rng(0)
    for split, per_class in (("train", 6), ("val", 3), ("test", 4)):
        for c in ("dog", "cat"):
            (tmp_path / "tree" / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "tree" / split / c / f"{i}.jpg")
    write_shards(str(tmp_path / "tree"), str(tmp_path / "shards"), shard_size=5)

    def cfg(dataset, loader):
        return DataConfig(dataset=str(tmp_path / dataset), loader=loader, holdout=4, normalization="imagenet",
                          workers=0, cache_dir=str(tmp_path / "cache"))

    def samples(data):
        data.train.set_epoch(1)
        data.train.with_ids = data.loader != "memory"
        return {name: [torch.cat(parts) for parts in zip(*batches)] for name, batches in
                (("train", list(data.train)), ("holdout", list(data.holdout)), ("test", list(data.test)))}

    ray_cfg = cfg("tree", "ray")
    loaders = {"memory": prepare_data(cfg("tree", "memory"), 4, 4, seed=0),
               "torch": prepare_data(cfg("tree", "torch"), 4, 4, seed=0),
               "shards": prepare_data(cfg("shards", "torch"), 4, 4, seed=0),
               "ray": worker_data({"plan": ray.put(streaming_plan(ray_cfg))}, 0, 1, "cpu")(ray_cfg, 4, 4, 0)}
    seen = {name: samples(data) for name, data in loaders.items()}
    for name, data in loaders.items():
        assert data.classes == ["cat", "dog"] and data.transform == "cifar", name
        assert {k: data.split[k].tolist() for k in ("train", "holdout")} == \
            {k: loaders["memory"].split[k].tolist() for k in ("train", "holdout")}, name
        assert len(seen[name]["test"][1]) == 6 and len(seen[name]["holdout"][1]) == 4, name  # val/: 2 × 3
        for split in ("holdout", "test"):
            assert torch.equal(seen[name][split][0], seen["memory"][split][0]), (name, split)
            assert torch.equal(seen[name][split][1], seen["memory"][split][1]), (name, split)
        if name in ("torch", "ray"):  # the epoch's order; the in-memory loader crops with its own generator
            assert torch.equal(seen[name]["train"][1], seen["memory"]["train"][1]), name
            assert all(torch.equal(seen[name]["train"][k], seen["torch"]["train"][k]) for k in (0, 2)), name
    # the shards' training split streams whole shards: its own order, the same samples and crops
    by_id = {name: {int(i): x for x, i in zip(seen[name]["train"][0], seen[name]["train"][2])} for name in ("shards", "torch")}
    assert by_id["shards"].keys() == by_id["torch"].keys()
    assert all(torch.equal(by_id["shards"][i], by_id["torch"][i]) for i in by_id["torch"])
    # WebDataset's layout: Ray Data's own reader takes our shards (the index beside them is not a tar)
    rows = ray.data.read_webdataset(str(tmp_path / "shards"), file_extensions=["tar"], decoder=None).take_all()
    keys = {row["__key__"]: row for row in rows}
    assert len(rows) == 12 + 6 and int(keys["train00000000"]["cls"]) == 0
    assert bytes(keys["train00000000"]["jpg"]) == (tmp_path / "tree" / "train" / "cat" / "0.jpg").read_bytes()


def test_ray_data_counts_the_images_it_skips(tmp_path, ray_cluster):
    import numpy as np
    import ray
    from PIL import Image

    from adaptnet.cluster.run.ray_data import worker_data
    from adaptnet.data import streaming_plan
    from adaptnet.loop.config import DataConfig

    for split in ("train", "val"):
        (tmp_path / "tree" / split / "a").mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((32, 32, 3), 10 * i, np.uint8)).save(tmp_path / "tree" / split / "a" / f"{i}.jpg")
    broken = tmp_path / "tree" / "train" / "a" / "3.jpg"
    broken.write_bytes(broken.read_bytes()[:200])
    cfg = DataConfig(dataset=str(tmp_path / "tree"), loader="ray", holdout=0, normalization="imagenet")
    data = worker_data({"plan": ray.put(streaming_plan(cfg))}, 0, 1, "cpu")(cfg, 2, 2, 0)
    for epoch in range(2):
        data.train.set_epoch(epoch)
        assert sum(len(y) for _, y in data.train) == 4
        assert data.train.skipped == epoch + 1  # logged as data/skipped_images


def test_ray_data_hands_encoded_jpegs_to_the_device_decode(tmp_path, imagenet_tree, ray_cluster):
    """data.decode: gpu through Ray Data (run here with the CPU as the device): the tasks only read bytes, the
    training process decodes and crops them, and the batches equal those of tasks that decode themselves."""
    from adaptnet.cluster.run.ray_data import RayBatches
    from adaptnet.data.catalog import open_reader
    from adaptnet.data.streaming import ImageFiles
    from adaptnet.data.transforms import train_transform
    from adaptnet.loop.config import AugmentConfig

    reader = open_reader(str(imagenet_tree))
    refs, labels = reader.listing().splits["train"]
    transform = train_transform("imagenet", AugmentConfig(train_crop=24, eval_resize=28, eval_crop=24), (0.5,) * 3,
                                (0.25,) * 3)

    def epoch(on_device: bool):
        files = ImageFiles(reader, refs[:70], labels[:70], None if on_device else transform, seed=5)
        batches = RayBatches(files, 32, shuffle=True, seed=5, with_ids=True,
                             device_transform=transform if on_device else None)
        batches.set_epoch(2)
        out = list(batches)
        return torch.cat([i for _, _, i in out]).tolist(), torch.cat([x for x, _, _ in out])

    (ids, images), (device_ids, device_images) = epoch(False), epoch(True)
    assert device_ids == ids and len(ids) == 70 and torch.equal(device_images, images)
