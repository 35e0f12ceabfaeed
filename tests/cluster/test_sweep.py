"""Ray Tune sweeps on a real local Ray cluster with real CIFAR-10 subsets and MLflow (sqlite)."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

from adaptnet.cluster.sweep.spaces import ADNSpace, ExitWeightSpace, OptimSpace
from adaptnet.cluster.sweep.config import with_overrides
from adaptnet.cluster.sweep.driver import concurrency, run_sweep
from adaptnet.cluster.sweep.spec import Objective, SweepSpec
from adaptnet.cluster.tracking.results import FINAL_MARK, SCORE
from adaptnet.cluster.tracking.runs import child_runs, finished_summary
from adaptnet.cluster.tracking.store import client, find_or_create_run, search_exact
from adaptnet.loop import build_config, read_yaml

REPO = Path(__file__).resolve().parents[2]

# A 3-exit MSDNet small enough for a CPU trial in seconds.
TINY_MSDNET = ["model.name=msdnet_cifar_budgeted", "model.args={n_blocks: 3, n_channels: 8}", "data.holdout=256",
               "data.test_subset=128", "train.batch_size=32", "optim.schedule=multistep"]


def _base(spec_path, *overrides, preset="cifar10-smoke"):
    tree = build_config(read_yaml(preset), [f"data.dataset={spec_path}", *overrides]).model_dump()
    tree.pop("output_dir")
    return tree


def _spec(tmp_path, name, base, tracking_uri=None, **kwargs):
    return SweepSpec(name=name, base=base, storage=str(tmp_path / "store"),
                     tracking_uri=tracking_uri or f"sqlite:///{tmp_path / 'mlflow.db'}",
                     experiment="sweep-tests", scratch=str(tmp_path / "scratch"), **kwargs)


def test_optuna_sweep_runs_four_trials_at_once_with_one_child_run_each(tmp_path, cifar10_spec, ray_cluster,
                                                                      pg_mlflow_server):
    """Four concurrent trials writing to an MLflow server over a real PostgreSQL (the cluster's store; sqlite,
    the local default, takes the concurrent trials of the other sweeps here)."""
    tracking_uri = pg_mlflow_server.uri
    base = _base(cifar10_spec, *TINY_MSDNET, "data.train_subset=256", "train.epochs=2")
    spec = _spec(tmp_path, "overlap", base, tracking_uri, space=OptimSpace() + ExitWeightSpace(num_exits=3, scheme="power"),
                 num_samples=4)
    assert concurrency(spec, ray.cluster_resources()) == 4  # 4 CPUs, 1 per single-worker trial
    result = run_sweep(spec)
    assert [t.status for t in result.trials] == ["FINISHED"] * 4
    children = child_runs(spec.tracking_uri, result.parent_run_id, "overlap")
    assert sorted(r.data.tags["adaptnet.trial_id"] for r in children) == sorted(t.trial_id for t in result.trials)
    spans = sorted((r.info.start_time, r.info.end_time) for r in children)
    assert any(later_start < earlier_end for (_, earlier_end), (later_start, _) in zip(spans, spans[1:]))
    for t in result.trials:  # sampled weights reached the config: normalised to sum K = 3
        assert sum(t.config["train"]["exit_weights"]) == pytest.approx(3, abs=1e-4)
        assert t.metrics[FINAL_MARK] == 1.0 and 0 <= t.metrics[SCORE] <= 100
    assert result.best().metrics[SCORE] == max(t.metrics[SCORE] for t in result.trials)
    history = client(spec.tracking_uri).get_metric_history(children[0].info.run_id, "epoch")
    assert sorted(m.step for m in history) == [1, 2]
    _assert_models_logged_and_registered(spec, result, children, {"best": [result.best()]})


def _assert_models_logged_and_registered(spec, result, children, expected_aliases):
    """Every trial's selected checkpoint is a LoggedModel with signature and model card, output of its child
    run; the best trial(s) are versions of the sweep's registered model under aliases."""
    import mlflow.artifacts as mlflow_artifacts
    import mlflow.pyfunc
    from mlflow.entities import LoggedModelStatus

    from adaptnet.cluster.tracking.models import MODEL_TAG, registered_name

    tracker = client(spec.tracking_uri)
    finished = {t.trial_id for t in result.finished()}
    model_of = {r.data.tags["adaptnet.trial_id"]: r.data.tags[MODEL_TAG] for r in children
                if r.data.tags["adaptnet.trial_id"] in finished}
    assert set(model_of) == finished
    for run in children:
        if run.data.tags["adaptnet.trial_id"] in finished:
            logged = tracker.get_logged_model(run.data.tags[MODEL_TAG])
            assert logged.source_run_id == run.info.run_id and logged.status == LoggedModelStatus.READY
            assert logged.name == run.info.run_name  # the trial's name, not its stage's
            assert logged.params["git_commit"] and logged.params["dataset"] == spec.base["data"]["dataset"]
            # one key per number: the run's final metrics, linked to the model they measure (no model/ copies)
            linked = {m.key: m.value for m in logged.metrics}
            final = {k: v for k, v in tracker.get_run(run.info.run_id).data.metrics.items() if k.startswith("final/")}
            assert linked == final and any(k.startswith("final/macs_") for k in linked)
            assert not any(k.startswith("model/") for k in tracker.get_run(run.info.run_id).data.metrics)
            assert [o.model_id for o in tracker.get_run(run.info.run_id).outputs.model_outputs] == [logged.model_id]
    name = registered_name(result.name)
    registered = tracker.get_registered_model(name)
    assert set(registered.aliases) == set(expected_aliases)
    for alias, trials in expected_aliases.items():
        version = tracker.get_model_version_by_alias(name, alias)
        assert version.tags[MODEL_TAG] in {model_of[t.trial_id] for t in trials}
        logged = tracker.get_logged_model(version.tags[MODEL_TAG])  # version → model → version, as the UI links
        assert version.source == f"models:/{logged.model_id}" and version.run_id == logged.source_run_id
        assert {"name": name, "version": str(version.version)} in json.loads(logged.tags["mlflow.modelVersions"])
    version = tracker.get_model_version_by_alias(name, sorted(expected_aliases)[0])
    local = mlflow_artifacts.download_artifacts(tracker.get_model_version_download_uri(name, version.version),
                                               tracking_uri=spec.tracking_uri)
    model = mlflow.pyfunc.load_model(local)
    assert model.metadata.signature.inputs.input_names() == ["image"]
    card = json.loads((Path(local) / "artifacts" / "model_card.json").read_text())
    assert card["git_commit"] and card["dataset"] == spec.base["data"]["dataset"] and card["classes"]


def test_asha_stops_a_poor_multi_worker_trial_and_leaves_no_placement_group(tmp_path, cifar10_spec, ray_cluster):
    from ray.util import placement_group_table

    before = set(placement_group_table())
    base = _base(cifar10_spec, *TINY_MSDNET, "data.train_subset=2048", "train.epochs=1")
    # One at a time in grid order: the good trial sets the first rung; a near-zero learning rate falls below it.
    spec = _spec(tmp_path, "asha", base, grid={"optim.lr": [0.1, 1e-9]}, asha=True, workers=2, max_concurrent=1)
    result = run_sweep(spec)
    statuses = [t.status for t in result.trials]
    assert statuses == ["FINISHED", "KILLED"]
    stopped = [t for t in result.trials if t.status == "KILLED"]
    assert all(t.metrics["training_iteration"] == 1 for t in stopped)  # stopped at the first rung
    runs = child_runs(spec.tracking_uri, result.parent_run_id)
    children = {r.data.tags["adaptnet.trial_id"]: r.info.status for r in runs}
    assert {children[t.trial_id] for t in stopped} == {"KILLED"}
    # a multi-worker trial ends as a single-worker one does: LoggedModel, @best, system metrics of its node
    _assert_models_logged_and_registered(spec, result, runs, {"best": [result.best()]})
    finished = next(r for r in runs if r.data.tags["adaptnet.trial_id"] == result.best().trial_id)
    assert "system/cpu_utilization_percentage" in client(spec.tracking_uri).get_run(finished.info.run_id).data.metrics
    deadline = time.time() + 30
    while time.time() < deadline:
        left = {pg: info for pg, info in placement_group_table().items() if pg not in before and info["state"] != "REMOVED"}
        if not left:
            break
        time.sleep(0.5)
    assert not left, left


def test_multi_objective_adn_sweep_has_a_pareto_front_of_sub_path_choices(tmp_path, cifar10_spec, ray_cluster):
    base = _base(cifar10_spec, "data.train_subset=256", "data.holdout=128", "data.test_subset=128", "train.epochs=1",
                 "train.batch_size=64", preset="cifar10-resnet56-adn")
    objectives = (Objective("final/holdout_top1_base", "max"), Objective("final/macs_base", "min"))
    spec = _spec(tmp_path, "adn", base, space=ADNSpace(blocks_per_stage=(9, 9, 9)), num_samples=4,
                 objectives=objectives, budgets=(70e6, 130e6))
    result = run_sweep(spec)
    front = result.pareto_front()
    assert front and set(t.trial_id for t in front) <= {t.trial_id for t in result.finished()}
    costs = {t.metrics["final/macs_base"] for t in result.finished()}
    assert len(costs) > 1  # the mandatory-block choices changed the base-net
    for t in result.finished():  # each trial picked, on the held-out split, a sub-network under each budget
        assert t.metrics["final/budget2_macs"] <= 130e6  # ResNet-56's super-net (125.5M) always fits
        assert t.metrics.get("final/budget1_macs", 0) <= 70e6  # absent when not even the base-net fits
        assert len(t.config["model"]["args"]["n_mandatory"]) == 3
    children = child_runs(spec.tracking_uri, result.parent_run_id)
    last = objectives[-1].metric
    ordered = sorted(front, key=lambda t: t.metrics[last])
    _assert_models_logged_and_registered(spec, result, children, {f"pareto{i}": [t for t in ordered
                                                                             if t.metrics[last] == ordered[i - 1].metrics[last]]
                                                                  for i in range(1, len(front) + 1)})


def test_bad_sweep_values_fail_in_one_line_before_any_cluster_work(tmp_path, cifar10_spec):
    from adaptnet.cluster.sweep.driver import validate
    from adaptnet.loop import ConfigError

    base = _base(cifar10_spec, *TINY_MSDNET)
    with pytest.raises(ConfigError, match=r"^sweep bad: optim.lr: Input should be greater than 0") as err:
        validate(_spec(tmp_path, "bad", base, grid={"optim.lr": [0.1, -1.0]}))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"train.exit_weights: msdnet_cifar_budgeted has 3 exits, got 5"):
        validate(_spec(tmp_path, "bad", base, space=ExitWeightSpace(num_exits=5)))
    assert with_overrides(base, {"model.ge_scope": None})["model"]["ge_scope"] is None


def test_a_trial_whose_child_run_finished_is_recognised_on_restore(tmp_path):
    """The driver can die between a trial's FINISHED child run and Tune recording its end: the restored trial
    must then report the logged summary instead of training again."""
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = find_or_create_run(tracking, "e", run_key="sweep/t1", run_name="t1", params={})
    mlflow = client(tracking)
    mlflow.log_metric(run_id, "final/holdout_top1_mean", 42.0)
    mlflow.log_metric(run_id, "epoch", 3)
    assert finished_summary(tracking, "e", "sweep/t1") is None  # still RUNNING
    mlflow.set_terminated(run_id, "FINISHED")
    assert finished_summary(tracking, "e", "sweep/t1") == {"final/holdout_top1_mean": 42.0}
    assert finished_summary(tracking, "e", "sweep/t2") is None
    assert finished_summary(tracking, "missing", "sweep/t1") is None


def _script(script, *args, env=None, timeout=900, cwd=REPO):
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_sweep_scripts_reject_bad_flags_in_one_line():
    for args, field in ((["sweeps/ge_vs_baseline.py", "--preset", "smoke", "--set", "optim.lr=-1"], "optim.lr"),
                        (["sweeps/ge_vs_baseline.py", "--arms", "ge,imta"], "--arms"),
                        (["sweeps/exit_weights.py", "--trials", "0"], "--trials")):
        done = _script(*args, "--address", "127.0.0.1:1", timeout=120)  # never reached: the error comes first
        assert done.returncode == 2, done.stderr
        assert field in done.stderr and len(done.stderr.strip().splitlines()) <= 2, done.stderr


def test_killed_sweep_driver_restores_without_rerunning_finished_trials(tmp_path, cifar10_spec, ray_head):
    """On sqlite, what `make demo` uses (a PostgreSQL store survives a restart: the server-restart drill below)."""
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = ["sweeps/exit_weights.py", "--preset", "smoke", "--trials", "4", "--max-concurrent", "2", "--no-asha",
               "--dataset", cifar10_spec, "--address", ray_head.address, "--storage", str(tmp_path / "store"),
               "--tracking-uri", tracking, "--name", "restore-drill",
               "--set", "data.train_subset=512", "--set", "train.epochs=3",
               *[f"--set={o}" for o in TINY_MSDNET if not o.startswith("data.holdout")]]
    env = {**ray_head.env, "ADAPTNET_SCRATCH": str(tmp_path / "scratch")}
    # run from tmp_path: whatever the driver writes to its working folder stays out of the checkout
    driver = subprocess.Popen([sys.executable, str(REPO / command[0]), *command[1:]], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    mlflow = client(tracking)
    finished_before = {}
    deadline = time.time() + 600
    while time.time() < deadline and not finished_before:  # kill once a trial has finished and others run
        time.sleep(1)
        local_db_missing = tracking.startswith("sqlite") and not (tmp_path / "mlflow.db").exists()
        experiment = None if local_db_missing else mlflow.get_experiment_by_name("adaptnet-sweeps")
        runs = mlflow.search_runs([experiment.experiment_id], "tags.`adaptnet.trial_id` != ''") if experiment else []
        finished_before = {r.info.run_id: r.info.end_time for r in runs if r.info.status == "FINISHED"}
        assert driver.poll() is None, driver.stdout.read()
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert finished_before, "no trial finished in time"

    done = _script(*command, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "restoring the sweep" in done.stdout + done.stderr
    # every trial is shown: started (again) or, when Tune had recorded its end before the kill, listed as kept
    shown = re.findall(r"trial ([1-4])/4 \([^)]*\): (?:started|finished before this restore, score)", done.stdout)
    assert sorted(set(shown)) == ["1", "2", "3", "4"], done.stdout[-3000:]
    experiment = mlflow.get_experiment_by_name("adaptnet-sweeps")
    (parent,) = search_exact(mlflow, [experiment.experiment_id], {"attributes.run_name": "restore-drill"})
    children = child_runs(tracking, parent.info.run_id)
    assert len(children) == 4 and len({r.data.tags["adaptnet.trial_id"] for r in children}) == 4
    assert {r.info.status for r in children} == {"FINISHED"}
    for run in children:
        if run.info.run_id in finished_before:  # not rerun: untouched since it finished
            assert run.info.end_time == finished_before[run.info.run_id]
        steps = [m.step for m in mlflow.get_metric_history(run.info.run_id, "epoch")]
        assert sorted(steps) == [1, 2, 3]


def test_a_stage_equal_in_two_arms_trains_once_with_the_results_of_training_it_twice(tmp_path, cifar10_spec,
                                                                                    ray_cluster, capsys):
    """IMTA's stage 1 is the GE arm's run of the same seed: shared, 2 of the 6 stages are copied, not trained."""
    base = _base(cifar10_spec, *TINY_MSDNET, "data.train_subset=256", "train.epochs=1", preset="cifar10-imta")
    arms = {"ge": {"technique": "multi_exit", "model.ge_scope": "coarsest"},
            "imta": {"technique": "imta_two_stage", "model.ge_scope": "coarsest"}}
    sweeps = {share: run_sweep(_spec(tmp_path, f"stages-{'shared' if share else 'own'}", base, arms=arms,
                                     grid={"arm": ["ge", "imta"], "seed": [0, 1]}, share_stages=share))
              for share in (True, False)}
    shared, own = ({t.name: t.metrics for t in sweeps[share].trials} for share in (True, False))
    assert sum(m["final/stages_trained"] for m in own.values()) == 6
    assert sum(m["final/stages_trained"] for m in shared.values()) == 4
    assert sum(m["final/stages_reused"] for m in shared.values()) == 2
    out = capsys.readouterr().out
    assert "stages trained: 4; reused from storage instead of training again: 2" in out
    # progress a person can follow: trial k/N with arm, seed and stage; the sweep's elapsed and remaining time
    assert re.search(r"\[stages-shared\] trial [1-4]/4, arm imta, seed 1: started \(stage1 1 epochs, stage2 1 epochs\)", out)
    assert re.search(r"trial [1-4]/4, arm imta, seed 0, stage2: epoch 1/1, held-out score [\d.]+ \| sweep: \d/4 epochs, "
                     r"\d+m\d\ds elapsed, ~\d+m\d\ds left", out)  # 6 stage-epochs, 4 of them distinct
    assert len(re.findall(r"\[stages-own\] trial [1-4]/4, arm \w+, seed \d: finished", out)) == 4
    assert re.search(r"\| sweep: 6/6 epochs", out)
    finals = lambda m: {k: v for k, v in m.items() if k.startswith("final/") and "stages_" not in k}  # noqa: E731
    assert sorted(shared) == sorted(own) == ["ge-s0", "ge-s1", "imta-s0", "imta-s1"]
    for name in own:  # bit-identical, not approximately equal
        differ = {k: (v, finals(own[name]).get(k)) for k, v in finals(shared[name]).items() if finals(own[name]).get(k) != v}
        assert not differ and len(finals(own[name])) > 10, (name, differ)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    reused = [r for r in child_runs(uri, sweeps[True].parent_run_id) if r.data.metrics.get("final/stages_reused")]
    for run in reused:  # a copied stage's epochs reach MLflow as if trained (IMTA: stage 1's, then stage 2's)
        steps = sorted(m.step for m in client(uri).get_metric_history(run.info.run_id, "epoch"))
        assert steps == ([1, 2] if run.data.tags["adaptnet.arm"] == "imta" else [1]), run.data.tags["adaptnet.arm"]


def test_mlflow_server_restarted_mid_sweep_loses_and_duplicates_no_metric(tmp_path, cifar10_spec, ray_cluster,
                                                                          pg_mlflow_server):
    """The PostgreSQL-backed server goes down after the first epochs are logged and comes back on the same
    store: every epoch and final metric of every trial is there exactly once."""
    import threading

    base = _base(cifar10_spec, *TINY_MSDNET, "data.train_subset=256", "train.epochs=3")
    spec = _spec(tmp_path, "restart", base, pg_mlflow_server.uri, grid={"optim.lr": [0.1, 0.05]}, max_concurrent=2)
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(result=run_sweep(spec)))
    runner.start()
    mlflow = client(pg_mlflow_server.uri)
    deadline = time.time() + 600
    logged = []
    while time.time() < deadline and not logged and runner.is_alive():
        try:
            runs = mlflow.search_runs([mlflow.get_experiment_by_name("sweep-tests").experiment_id],
                                      "tags.`adaptnet.trial_id` != ''")
            logged = [r for r in runs if mlflow.get_metric_history(r.info.run_id, "epoch")]
        except Exception:  # noqa: BLE001 — not created yet
            pass
        time.sleep(0.5)
    assert logged, "no epoch was logged in time"
    pg_mlflow_server.stop()              # down while epochs 2, 3 and the final evaluations run
    time.sleep(5)
    pg_mlflow_server.start()             # back, same PostgreSQL store
    runner.join(timeout=900)
    result = outcome["result"]
    assert [t.status for t in result.trials] == ["FINISHED"] * 2
    children = child_runs(spec.tracking_uri, result.parent_run_id, "restart")
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
    for run in children:
        for key in ("epoch", "train/loss", "test/top1_exit3", SCORE):
            assert sorted(m.step for m in mlflow.get_metric_history(run.info.run_id, key)) == [1, 2, 3], key
        assert len(mlflow.get_metric_history(run.info.run_id, "final/holdout_top1_mean")) == 1
