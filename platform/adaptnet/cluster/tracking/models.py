"""Sweep models in MLflow 3: every trial's selected checkpoint as a LoggedModel (pyfunc, signature, model card,
linked to its child run as an output, its card's numbers as model metrics), and the trials `chosen_trials` picks
(each arm's typical seed in a paired comparison, a search's best trial or Pareto points) as versions of a
registered model with aliases (not stages)."""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from .store import client

MODEL_TAG = "adaptnet.model_id"   # on a child run: the LoggedModel of its selected checkpoint
MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # on a LoggedModel: its registered versions (read by the UI)


def registered_name(sweep: str) -> str:
    return "adaptnet-" + re.sub(r"[^A-Za-z0-9_.-]", "_", sweep)


def deployed_metrics(card: dict) -> dict[str, float]:
    """What the exported model itself achieves, where that differs from the trial's `final/` evaluation: a
    multi-exit net's operating point at each budget (a real threshold set, chosen on the held-out split), whose
    test accuracy and cost differ from the budgeted curve's value at that budget (`final/budget<i>_test_top1`).
    An ADN net exports one sub-network, whose numbers are `final/…_<skip>` already."""
    out = {}
    for i, b in enumerate(card.get("budgets") or [], 1):
        if b:
            out.update({f"final/budget{i}_deployed_test_top1": b["test_accuracy"],
                        f"final/budget{i}_deployed_test_macs": b["test_cost"],
                        f"final/budget{i}_deployed_holdout_macs": b["holdout_cost"]})
    return {k: float(v) for k, v in out.items()}


def log_trial_model(tracking_uri: str, run_id: str, checkpoint: Path, budgets, git_commit: str, name: str,
                    trial_params: dict, evaluated: dict | None = None) -> tuple[str, dict[str, float]]:
    """The trial's held-out-selected checkpoint as a LoggedModel of its child run, named like the run (the
    checkpoint's stage in a tag), its params the trial's values: multi-exit nets with early exit at the sweep's
    budgets, ADN nets as their base-net. Returns the model id and its `deployed_metrics` (logged by the caller
    with the trial's final metrics, all linked to the model)."""
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model

    from ...deploy.bundle import build_bundle
    from ...loop.checkpoint import load_checkpoint
    from ...models import SkippableDepthNet, create_model, model_entry
    from .export import save_model_dir

    model_cfg = load_checkpoint(checkpoint)["config"]["model"]
    skip = None
    if issubclass(model_entry(model_cfg["name"]).builder, SkippableDepthNet):
        skip = "T" * create_model(model_cfg["name"], **model_cfg["args"]).num_stages
    bundle = build_bundle(checkpoint, None if skip else list(budgets), skip, device="cpu",
                          extra_card={"git_commit": git_commit, "source_run_id": run_id}, evaluated=evaluated)
    mlflow = client(tracking_uri)
    run = mlflow.get_run(run_id)
    card = bundle["card"]
    logged = mlflow.create_logged_model(
        run.info.experiment_id, name=re.sub(r"[^A-Za-z0-9_-]", "_", name), source_run_id=run_id, model_type=f"adaptnet-{card['kind']}",
        params={"kind": card["kind"], "model": card["model"], "technique": card["technique"], "dataset": card["dataset"],
                "git_commit": git_commit, **({"skip": skip} if skip else {"budgets": ",".join(f"{b:.6g}" for b in
                                                                                           bundle["budgets"])}),
                **{k: str(v) for k, v in trial_params.items()}},
        tags={"adaptnet.run": card["run"]})  # the checkpoint's own run (an IMTA trial: its stage)
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / "model"
        save_model_dir(bundle, local, Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id,
                                            run_id=run_id, model_id=logged.model_id))
        mlflow.log_model_artifacts(logged.model_id, str(local))
    mlflow.finalize_logged_model(logged.model_id, "READY")
    mlflow.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    mlflow.set_tag(run_id, MODEL_TAG, logged.model_id)
    return logged.model_id, deployed_metrics(card)


def chosen_trials(result) -> list[tuple[str, object, str]]:
    """(alias, trial, why) of the trials a sweep registers. A paired comparison (trials with an `arm`) registers,
    per arm, the seed closest to its arm's mean (`@<arm>`): no "best" across arms and seeds. A search registers
    its best trial (`@best`) or each Pareto point (`@pareto1`…, cheapest by the last objective first)."""
    first = result.objectives[0]
    arms = list(dict.fromkeys(t.params["arm"] for t in result.finished() if "arm" in t.params))
    if arms:
        chosen = []
        for arm in arms:
            trials = [t for t in result.finished() if t.params.get("arm") == arm and t.metrics.get(first.metric) is not None]
            if trials:
                mean = sum(t.metrics[first.metric] for t in trials) / len(trials)
                typical = min(trials, key=lambda t: abs(t.metrics[first.metric] - mean))
                chosen.append((re.sub(r"[^A-Za-z0-9_-]", "_", str(arm)), typical,
                               f"arm {arm}: the seed whose {first.metric} (held-out split) is closest to the arm's "
                               f"mean over {len(trials)} seeds ({mean:.4g})"))
        return chosen
    if len(result.objectives) == 1:
        best = result.best()
        return [("best", best, f"best {first.metric} ({first.mode}, held-out split) of {len(result.finished())} "
                               "finished trials")] if best else []
    last = result.objectives[-1]
    front = sorted(result.pareto_front(), key=lambda t: t.metrics[last.metric] * (1 if last.mode == "min" else -1))
    objectives = ", ".join(f"{o.metric} ({o.mode})" for o in result.objectives)
    return [(f"pareto{i}", t, f"Pareto point {i} of {len(front)} on {objectives}, cheapest first")
            for i, t in enumerate(front, 1)]


def register_logged_model(tracking_uri: str, name: str, model_id: str, run_id: str, description: str, tags: dict):
    """A version of `name` whose source is the LoggedModel (`models:/<id>`), listed on that model in
    `mlflow.modelVersions`, so run, logged model and version link to each other in the UI (what
    `mlflow.register_model` does, for this client's store rather than the global one)."""
    from ..environ import scoped_environ

    mlflow = client(tracking_uri)
    # a local SQL registry resolves models:/<id> through the global tracking URI: point it at this store
    with scoped_environ({"MLFLOW_TRACKING_URI": tracking_uri}):
        version = mlflow.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id,
                                              description=description, tags=tags)
    listed = json.loads(mlflow.get_logged_model(model_id).tags.get(MODEL_VERSIONS_TAG, "[]"))
    mlflow.set_logged_model_tags(model_id, {MODEL_VERSIONS_TAG: json.dumps(
        listed + [{"name": name, "version": str(version.version)}])})
    return version


def register_sweep_models(tracking_uri: str, result) -> dict[str, str]:
    """Registers the `chosen_trials` under `adaptnet-<sweep>` with their aliases, each version's description
    saying why it was chosen; returns {alias: version}. Trials without a LoggedModel are skipped."""
    from mlflow.exceptions import MlflowException

    from .runs import TRIAL_TAG, child_runs

    runs_by_trial = {r.data.tags.get(TRIAL_TAG): r for r in child_runs(tracking_uri, result.parent_run_id, result.name)}
    mlflow = client(tracking_uri)
    name = registered_name(result.name)
    aliases = {}
    for alias, trial, why in chosen_trials(result):
        run = runs_by_trial.get(trial.trial_id)
        model_id = run and run.data.tags.get(MODEL_TAG)
        if not model_id:
            continue
        try:
            mlflow.create_registered_model(name, description=f"adaptnet sweep {result.name}: "
                                           + ", ".join(f"{o.metric} ({o.mode})" for o in result.objectives))
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = register_logged_model(tracking_uri, name, model_id, run.info.run_id, why,
                                        {"adaptnet.trial": trial.name, MODEL_TAG: model_id})
        mlflow.set_registered_model_alias(name, alias, version.version)
        aliases[alias] = version.version
    if aliases:
        mlflow.set_tag(result.parent_run_id, f"adaptnet.registered.{result.name}",
                       f"{name}: " + ", ".join(f"@{a} = v{v}" for a, v in aliases.items()))
    return aliases
