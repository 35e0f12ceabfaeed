"""Ray Train on a real local Ray cluster (2 gloo CPU workers) with real CIFAR-10 subsets, MLflow and S3."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest

from conftest import assert_evaluation_equals_one_process

from adaptnet.cluster.tracking.store import client, search_exact
from adaptnet.cluster.run.train import ClusterOptions, train_on_ray
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
    (run,) = search_exact(mlflow, [exp.experiment_id], {"attributes.run_name": name})
    return run, sorted((m.step, m.value) for m in mlflow.get_metric_history(run.info.run_id, key))


def _train_worker_pids() -> list[int]:
    """Pids of live Ray Train worker processes, by process title (what a user's `kill` would see)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::RayTrainWorker"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return sorted(pids)


def _kill_a_worker_during_epoch(tracking, experiment, name, epoch, killed):
    """From outside: once MLflow has `epoch` (logged just before that epoch's checkpoint is committed),
    SIGKILL one Ray Train worker process by pid; records (pid, time)."""
    deadline = time.time() + 300
    workers = []
    while time.time() < deadline and not workers:  # look the workers up before the moment comes
        workers = _train_worker_pids()
        time.sleep(0.2)
    while time.time() < deadline:
        try:
            _, steps = _history(tracking, experiment, name, "epoch")
        except ValueError:  # the run is not there yet
            steps = []
        if len(steps) >= epoch:
            os.kill(workers[-1], signal.SIGKILL)
            killed.append((workers[-1], time.time()))
            return
        time.sleep(0.1)


def test_workers_state_api_reaches_their_own_cluster(ray_cluster):
    """Ray Train's placement-group cleaner polls the state API from a worker; on a `ray.init(address="local")`
    cluster the worker setup hook must point it at this cluster, not at a stale or missing `ray start` file."""
    @ray_cluster.remote
    def probe():
        from ray.util.state import list_nodes

        return os.environ.get("RAY_ADDRESS"), len(list_nodes(timeout=20))

    address, nodes = ray_cluster.get(probe.remote(), timeout=120)
    assert address == ray_cluster.get_runtime_context().gcs_address and nodes == 1


def test_a_helper_actor_runs_the_setup_hook_without_importing_torch(ray_cluster):
    """Ray Train starts several helper actors per run (controller, placement-group cleaner, …), each in a fresh
    worker process whose setup hook imports `adaptnet.cluster.run.runtime`: importing the package must not
    import torch and every model family there (≈ 2.5 s of CPU per process)."""
    class Helper:
        def modules(self):
            return os.environ.get("RAY_ADDRESS"), sorted(m for m in ("torch", "adaptnet.models") if m in sys.modules)

    helper = ray_cluster.remote(num_cpus=0)(Helper).remote()
    address, heavy = ray_cluster.get(helper.modules.remote(), timeout=120)
    assert address == ray_cluster.get_runtime_context().gcs_address  # the setup hook ran
    assert heavy == []
    ray_cluster.kill(helper)
    # the sweep's stage broker is such an actor too: its class's module must not import torch either
    probe = "import sys, adaptnet.cluster.sweep.stage_share; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"


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
    mlflow = client(tracking)
    run, starts = _history(tracking, "drills", "fault", "start_epoch")
    logged_before_kill = sum(m.timestamp / 1000 < killed[0][1]
                             for m in mlflow.get_metric_history(run.info.run_id, "epoch"))
    resumed_at = max(start for _, start in starts)
    assert resumed_at > 0  # the new worker group started from a checkpoint …
    assert resumed_at >= logged_before_kill - 1  # … at most one finished epoch before the kill was redone


def test_s3_drill_two_workers_global_metrics_checkpoints_and_artifacts_in_the_bucket_resume_from_s3(
        tmp_path, cifar10_spec, ray_cluster, mlflow_server):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="ray-checkpoints")
    options = ClusterOptions(workers=2, storage="s3://ray-checkpoints/runs", tracking_uri=mlflow_server.uri,
                             experiment="s3-drill")
    first = train_on_ray(_config(tmp_path, cifar10_spec, "s3", 1), options)
    # Each of the 2 ranks trains on 64 images; rank 0 reports the all-reduced count over all 128.
    assert first.metrics["train/samples"] == 128
    assert_evaluation_equals_one_process(first.metrics, tmp_path / "runs" / "s3")  # evaluation shared by the ranks
    run, samples = _history(mlflow_server.uri, "s3-drill", "s3", "train/samples")
    assert samples == [(1, 128.0)] and run.info.status == "FINISHED" and run.data.params["train.epochs"] == "1"
    artifacts = {a.path for a in client(mlflow_server.uri).list_artifacts(run.info.run_id)}
    assert {"config.yaml", "accuracy_vs_cost.csv", "accuracy_vs_cost.png", "split.pt", "costs.json",
            "checkpoint"} <= artifacts
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="ray-checkpoints").get("Contents", [])]
    assert any(k.startswith("runs/s3/checkpoint_") and k.endswith("checkpoint.pt") for k in keys), keys
    artifacts = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow-artifacts").get("Contents", [])]
    assert any(k.endswith("accuracy_vs_cost.csv") for k in artifacts) and any(k.endswith("last.pt") for k in artifacts)

    # The same command with more epochs resumes from the checkpoint read back from S3.
    result = train_on_ray(_config(tmp_path, cifar10_spec, "s3", 2), options)
    assert result.metrics["epoch"] == 2 and result.metrics["start_epoch"] == 1
    _, epochs = _history(mlflow_server.uri, "s3-drill", "s3", "epoch")
    assert [step for step, _ in epochs] == [1, 2]


@pytest.mark.parametrize("mlflow_server", ["postgresql"], indirect=True)  # the cluster's durable store
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
    assert [step for step, _ in accuracy] == [1, 2, 3, 4]  # none lost, none twice


def test_workers_default_to_one_gpu_each_on_a_cluster_with_gpus_and_to_none_without(tmp_path):
    """`adaptnet train --workers N` without --gpus-per-worker, on a local Ray declaring 2 logical GPUs (its own
    process: this module's cluster has none), then on one without: 1 GPU per worker, then 0; a given value wins."""
    import subprocess
    import sys

    probe = """
import ray
from adaptnet.cluster.run.train import ClusterOptions
ray.init(address="local", num_cpus=1, num_gpus={gpus}, include_dashboard=False)
cluster = ray.cluster_resources().get("GPU", 0.0)
print(ClusterOptions(workers=2).scaling(cluster).gpus_per_worker, ClusterOptions(workers=2, gpus_per_worker=0).scaling(cluster).gpus_per_worker)
"""
    import shutil
    import tempfile

    seen, short = [], tempfile.mkdtemp(prefix="rg-", dir="/tmp")  # Ray's socket paths: at most 107 bytes
    try:
        for gpus in (2, 0):
            done = subprocess.run([sys.executable, "-c", probe.format(gpus=gpus)], capture_output=True, text=True,
                                  timeout=300, cwd=tmp_path, env={**os.environ, "RAY_TMPDIR": short})
            assert done.returncode == 0, done.stderr[-2000:]
            seen.append(done.stdout.split()[-2:])
    finally:
        shutil.rmtree(short, ignore_errors=True)
    assert seen == [["1.0", "0"], ["0.0", "0"]]
