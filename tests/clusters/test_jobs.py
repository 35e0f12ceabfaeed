"""The user's day on local clusters: `ray job submit` of the smoke sweep to a token-authenticated head on
127.0.0.1 with an MLflow server on 127.0.0.1, and the same sweep on a local multi-node (fake provider)
cluster with trials on several nodes. Ray and MLflow are stopped by pid."""
import csv
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import MlflowServer, RayHead, assert_markdown_tables

from adaptnet.cluster.tracking.runs import NODE_TAG, child_runs
from adaptnet.cluster.tracking.store import client, search_exact

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def _submit_smoke_sweep(head: RayHead, tmp_path: Path, spec: str, tracking_uri: str, name: str) -> tuple[str, float]:
    head.wait_for_job_agent()  # a fresh head answers "No available agent to submit job" until its agent registers
    started = time.perf_counter()
    submission = f"{name}-{uuid.uuid4().hex[:6]}"
    done = subprocess.run(
        [RAY, "job", "submit", "--address", head.dashboard, "--submission-id", submission,
         "--runtime-env", "clusters/runtime_env.yaml", "--", "python", "sweeps/ge_vs_baseline.py", "--preset",
         "smoke", "--seeds", "1", "--dataset", spec, "--storage", str(tmp_path / "store"), "--tracking-uri",
         tracking_uri, "--name", name], cwd=REPO, env=head.env, capture_output=True, text=True, timeout=1500)
    runtime = time.perf_counter() - started
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    return submission, runtime


def _parent_and_children(tracking_uri: str, name: str):
    mlflow = client(tracking_uri)
    experiment = mlflow.get_experiment_by_name("adaptnet-sweeps")
    (parent,) = search_exact(mlflow, [experiment.experiment_id], {"attributes.run_name": name})
    return parent, child_runs(tracking_uri, parent.info.run_id)


def test_job_submit_runs_the_smoke_sweep_into_mlflow_on_loopback(tmp_path, cifar10_spec, ray_head, port_factory):
    server = MlflowServer(tmp_path, str(tmp_path / "artifacts"), port_factory()).start()
    try:
        submission, runtime = _submit_smoke_sweep(ray_head, tmp_path, cifar10_spec, server.uri, "job-smoke")
        parent, children = _parent_and_children(server.uri, "job-smoke")
        assert parent.info.status == "FINISHED"
        assert len(children) == 3 and {r.info.status for r in children} == {"FINISHED"}  # 3 arms × 1 seed
        assert {r.data.tags["adaptnet.arm"] for r in children} == {"baseline", "ge", "imta"}
        assert {r.info.run_name for r in children} == {"baseline-s0", "ge-s0", "imta-s0"}  # the sweep: a tag
        for run in children:  # logged models named like their runs, with the arm's swept values
            logged = client(server.uri).get_logged_model(run.data.tags["adaptnet.model_id"])
            assert logged.name == run.info.run_name and logged.params["arm"] == run.data.tags["adaptnet.arm"]
            assert "model.ge_scope" in logged.params and logged.params["seed"] == "0"
        assert {r.data.tags["adaptnet.sweep"] for r in children} == {parent.data.tags["adaptnet.sweep"]} == {"job-smoke"}
        artifacts = {a.path for a in client(server.uri).list_artifacts(parent.info.run_id, "job-smoke")}
        assert {"job-smoke/comparison.md", "job-smoke/trials.csv"} <= artifacts
        _assert_comparison_readable_in_the_ui(server.uri, parent, tmp_path / "downloaded")
    finally:
        server.stop()
    logs = subprocess.run([RAY, "job", "logs", "--address", ray_head.dashboard, submission], env=ray_head.env,
                          capture_output=True, text=True, timeout=120).stdout
    assert "epoch 1 | loss" in logs and "paired seeds" in logs
    print(f"job runtime {runtime:.1f} s")


def _assert_comparison_readable_in_the_ui(uri: str, parent, folder: Path) -> None:
    """The parent's `cmp/...` metrics are the printed table's numbers (comparison.csv), every Markdown artifact
    is a valid table, the verdict is the run's description, and the experiment opens on its runs."""
    import mlflow.artifacts

    tracker = client(uri)
    local = Path(mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, dst_path=str(folder), tracking_uri=uri))
    markdown = sorted(local.rglob("*.md"))
    assert {p.name for p in markdown} >= {"comparison.md", "trials.md"}
    for path in markdown:
        assert assert_markdown_tables(path.read_text()) >= 1, path
    metrics = tracker.get_run(parent.info.run_id).data.metrics
    assert not any(k.startswith("best/") for k in metrics)  # no best trial across the arms of a comparison
    assert not (local / "job-smoke" / "best_config.yaml").exists()
    rows = list(csv.DictReader((local / "job-smoke" / "comparison.csv").open()))
    exits = [r for r in rows if r["metric"].startswith("exit")]
    assert exits
    for row in exits:
        prefix = f"cmp/{row['metric']}/{row['arm']}"
        assert metrics[f"{prefix}/mean"] == pytest.approx(float(row["mean"])) and metrics[f"{prefix}/n"] == 1
        if row["diff_vs_baseline"]:
            assert metrics[f"{prefix}/delta"] == pytest.approx(float(row["diff_vs_baseline"]))
    assert "paired seeds" in tracker.get_run(parent.info.run_id).data.tags["mlflow.note.content"]
    registered = tracker.get_registered_model("adaptnet-job-smoke")
    assert set(registered.aliases) == {"baseline", "ge", "imta"}  # each arm's typical seed, no best across arms
    experiment = tracker.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_local_multi_node_cluster_runs_the_smoke_sweep_with_trials_on_two_nodes(tmp_path, cifar10_spec, port_factory):
    port = port_factory()
    config = yaml.safe_load((REPO / "clusters" / "local.yaml").read_text())
    config["provider"]["gcs_address"] = f"127.0.0.1:{port}"
    autoscaling = tmp_path / "local.yaml"
    autoscaling.write_text(yaml.safe_dump(config))
    head = RayHead(tmp_path, port, port_factory(), num_cpus=0, extra_env={"RAY_FAKE_CLUSTER": "1"},
                   extra_args=['--resources={"trial_driver": 4}', f"--autoscaling-config={autoscaling}"])
    try:
        deadline = time.time() + 180
        alive = []
        while time.time() < deadline and len(alive) < 3:  # head + the 2 workers kept up by min_workers
            nodes = head.get("/api/v0/nodes?limit=100")["data"]["result"]["result"]
            alive = [n for n in nodes if n["state"] == "ALIVE"]
            time.sleep(1)
        assert len(alive) == 3, alive
        tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
        # The same job's driver, run against the cluster directly: in Ray 2.60 the fake provider's nodes register
        # no job agent ("No available agent to submit job"), so `ray job submit` is covered by the test above.
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "sweeps/ge_vs_baseline.py", "--preset", "smoke", "--arms", "baseline,ge",  # 4 trials
             "--dataset", cifar10_spec,
             "--address", f"127.0.0.1:{port}", "--storage", str(tmp_path / "store"), "--tracking-uri", tracking,
             "--name", "multi-node"], cwd=REPO, env=head.env, capture_output=True, text=True, timeout=1500)
        runtime = time.perf_counter() - started
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        _, children = _parent_and_children(tracking, "multi-node")
        nodes = {r.data.tags[NODE_TAG] for r in children}
        head_node = next(n["node_id"] for n in alive if n["is_head_node"])
        assert len(nodes) >= 2 and head_node not in nodes, nodes  # the head (0 CPUs) trains nothing
        print(f"multi-node sweep runtime {runtime:.1f} s; trials on {len(nodes)} nodes")
    finally:
        head.stop()
