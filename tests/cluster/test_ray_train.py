"""Ray Train on a real local Ray cluster (2 gloo CPU workers) with real CIFAR-10 subsets, MLflow and S3."""
import os
import signal
import threading
import time

import boto3

from adaptnet.cluster.tracking import client
from adaptnet.cluster.train import ClusterOptions, train_on_ray
from adaptnet.loop import load_config

TINY = ["model.name=msdnet_cifar_budgeted", "data.train_subset=128", "data.holdout=32", "data.test_subset=32",
        "train.batch_size=32", "optim.schedule=multistep"]


def _config(tmp_path, spec, name, epochs, *extra):
    return load_config("cifar10-smoke", [f"name={name}", f"output_dir={tmp_path / 'runs'}", f"data.dataset={spec}",
                                         f"train.epochs={epochs}", *TINY, *extra])


def _history(tracking_uri, experiment, name, key):
    mlflow = client(tracking_uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"no experiment {experiment}")
    (run,) = mlflow.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    return run, sorted((m.step, m.value) for m in mlflow.get_metric_history(run.info.run_id, key))


def test_two_workers_report_global_metrics_once_per_epoch(tmp_path, cifar10_spec, ray_cluster):
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = train_on_ray(_config(tmp_path, cifar10_spec, "two-workers", 2),
                          ClusterOptions(workers=2, storage=str(tmp_path / "store"), tracking_uri=tracking,
                                         experiment="drills"))
    assert result.metrics["epoch"] == 2
    # Each rank trains on 64 images; rank 0 reports the all-reduced count and accuracies over all 128.
    assert result.metrics["train/samples"] == 128
    run, epochs = _history(tracking, "drills", "two-workers", "epoch")
    assert epochs == [(1, 1.0), (2, 2.0)]
    _, samples = _history(tracking, "drills", "two-workers", "train/samples")
    assert [v for _, v in samples] == [128.0, 128.0]
    artifacts = {a.path for a in client(tracking).list_artifacts(run.info.run_id)}
    assert {"config.yaml", "accuracy_vs_cost.csv", "accuracy_vs_cost.png", "split.pt", "costs.json",
            "checkpoint"} <= artifacts
    assert run.info.status == "FINISHED" and run.data.params["train.epochs"] == "2"


def _kill_a_worker_during_epoch(tracking, experiment, name, epoch, killed):
    """From outside: once MLflow has `epoch` (logged after the previous epoch's checkpoint was committed,
    before this epoch's is), SIGKILL one Ray Train worker process by pid."""
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            _, steps = _history(tracking, experiment, name, "epoch")
        except ValueError:  # the run is not there yet
            steps = []
        if len(steps) >= epoch:
            from ray.util.state import list_actors

            workers = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
            if workers:
                os.kill(workers[-1].pid, signal.SIGKILL)
                killed.append(workers[-1].pid)
                return
        time.sleep(0.2)


def test_fault_drill_killed_worker_resumes_from_the_last_epoch(tmp_path, cifar10_spec, ray_cluster):
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    killed = []
    killer = threading.Thread(target=_kill_a_worker_during_epoch, args=(tracking, "drills", "fault", 2, killed))
    killer.start()
    result = train_on_ray(_config(tmp_path, cifar10_spec, "fault", 4),
                          ClusterOptions(workers=2, storage=str(tmp_path / "store"), tracking_uri=tracking,
                                         experiment="drills", max_failures=2))
    killer.join()
    assert killed, "no Ray Train worker was found to kill"
    assert result.metrics["epoch"] == 4
    _, epochs = _history(tracking, "drills", "fault", "epoch")
    assert [step for step, _ in epochs] == [1, 2, 3, 4]  # every epoch exactly once in MLflow
    _, starts = _history(tracking, "drills", "fault", "start_epoch")
    assert any(start > 0 for _, start in starts)  # a process resumed from a checkpoint …
    assert all(start >= step - 2 for step, start in starts)  # … losing at most the epoch in flight


def test_s3_drill_checkpoints_and_artifacts_in_the_bucket_and_resume_from_s3(
        tmp_path, cifar10_spec, ray_cluster, mlflow_server):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="ray-checkpoints")
    options = ClusterOptions(workers=2, storage="s3://ray-checkpoints/runs", tracking_uri=mlflow_server.uri,
                             experiment="s3-drill")
    train_on_ray(_config(tmp_path, cifar10_spec, "s3", 1), options)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="ray-checkpoints").get("Contents", [])]
    assert any(k.startswith("runs/s3/checkpoint_") and k.endswith("checkpoint.pt") for k in keys), keys
    artifacts = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow-artifacts").get("Contents", [])]
    assert any(k.endswith("accuracy_vs_cost.csv") for k in artifacts) and any(k.endswith("last.pt") for k in artifacts)

    # The same command with more epochs resumes from the checkpoint read back from S3.
    result = train_on_ray(_config(tmp_path, cifar10_spec, "s3", 2), options)
    assert result.metrics["epoch"] == 2 and result.metrics["start_epoch"] == 1
    _, epochs = _history(mlflow_server.uri, "s3-drill", "s3", "epoch")
    assert [step for step, _ in epochs] == [1, 2]


def test_mlflow_down_drill_loses_no_metric(tmp_path, cifar10_spec, ray_cluster, mlflow_server):
    outcome = {}
    cfg = _config(tmp_path, cifar10_spec, "mlflow-down", 4)
    runner = threading.Thread(target=lambda: outcome.update(result=train_on_ray(
        cfg, ClusterOptions(workers=2, storage=str(tmp_path / "store"), tracking_uri=mlflow_server.uri,
                            experiment="down-drill"))))
    runner.start()
    local_log = cfg.run_dir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (local_log.exists() and len(local_log.read_text().splitlines()) >= 1):
        time.sleep(0.2)
    mlflow_server.stop()                       # down while epochs 2.. finish
    while time.time() < deadline and len(local_log.read_text().splitlines()) < 3:
        time.sleep(0.2)
    mlflow_server.start()                      # back, same store
    runner.join(timeout=300)
    assert outcome["result"].metrics["epoch"] == 4
    _, epochs = _history(mlflow_server.uri, "down-drill", "mlflow-down", "epoch")
    assert [step for step, _ in epochs] == [1, 2, 3, 4]
    _, accuracy = _history(mlflow_server.uri, "down-drill", "mlflow-down", "test/top1_exit5")
    assert len(accuracy) == 4
