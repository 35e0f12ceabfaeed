"""The MLflow run store through explicit run ids (MlflowClient), never the fluent thread-local API.

The driver finds or creates the run (one per run key: storage + run name), so a rerun of the same command
keeps logging into the same run; a run key holding another config is refused. Every user value reaches an
MLflow filter through `search_exact`.
"""
from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

from ..environ import scoped_environ

RUN_KEY_TAG = "adaptnet.run_key"
FAST_FAIL_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def resolve_tracking_uri(uri: str | None = None) -> str:
    """`uri`, else MLFLOW_TRACKING_URI, else a sqlite store in the working directory (absolute, so workers
    started elsewhere write to the same file)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri and uri.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the pinned driver is psycopg2
        uri = "postgresql+psycopg2://" + uri[len("postgresql://"):]
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def client(tracking_uri: str):
    """An MlflowClient with MLflow's own retries; wrap calls that must not wait in `fast_fail()`."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri)


def fast_fail():
    """A context in which MLflow requests fail at once instead of MLflow's own minutes-long retry loop
    (training must not stall); other calls (run lookup, creation) keep retrying."""
    return scoped_environ(FAST_FAIL_ENV)


def retry_until(call, timeout_s: float, interval_s: float = 2.0):
    """`call()` (fast-failing) until it succeeds or `timeout_s` passed (then its last error is raised)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with fast_fail():
                return call()
        except Exception:  # noqa: BLE001 — any tracking failure: the server may be restarting
            if time.monotonic() > deadline:
                raise
            time.sleep(interval_s)


def _quoted(value: str) -> str | None:
    """`value` as an MLflow filter literal, or None when no quoting can hold it: MLflow strips the quotes
    without unescaping, so a value may not contain its own quote (nor a backslash, which escapes the quote)."""
    for quote in ("'", '"'):
        if quote not in value and "\\" not in value:
            return f"{quote}{value}{quote}"
    return None


def search_exact(mlflow, experiment_ids: list[str], equals: dict[str, str], max_results: int = 50000) -> list:
    """Runs whose `tags.NAME` / `attributes.NAME` equal the given values exactly, whatever characters the values
    hold. The one place a user value (names, storage paths, run keys) enters an MLflow filter string: a value
    no literal can hold is matched with LIKE, `_` standing for its quotes and backslashes, then compared here."""
    clauses = []
    for field, value in equals.items():
        kind, _, name = field.partition(".")
        lhs = f"{kind}.`{name}`"
        literal = _quoted(value)
        if literal is None:
            wild = "".join("_" if c in "'\"\\%" else c for c in value)
            clauses.append(f"{lhs} LIKE '{wild}'")
        else:
            clauses.append(f"{lhs} = {literal}")
    runs = mlflow.search_runs(experiment_ids, filter_string=" and ".join(clauses), max_results=max_results)
    return [run for run in runs if all(_field(run, f) == v for f, v in equals.items())]


def _field(run, field: str):
    kind, _, name = field.partition(".")
    return run.data.tags.get(name) if kind == "tags" else getattr(run.info, name, None)


def find_run(mlflow, experiment_id: str, run_key: str):
    """The run tagged `run_key` in the experiment, or None."""
    runs = search_exact(mlflow, [experiment_id], {f"tags.{RUN_KEY_TAG}": run_key}, max_results=1000)
    return runs[0] if runs else None


def param_changes(logged: dict[str, str], params: dict[str, str]) -> list[str]:
    """Params (present in both) in which a new run differs from the run already logged under its key, beyond
    the resume-safe ones (loop.preflight.RESUME_SAFE; `train.epochs` may grow)."""
    from ...loop.preflight import RESUME_SAFE

    changed = [k for k in sorted(set(logged) & set(params))
               if k not in RESUME_SAFE and logged[k] != str(params[k])[:6000]]
    if "train.epochs" in changed and logged["train.epochs"].isdigit() and int(params["train.epochs"]) > int(logged["train.epochs"]):
        changed.remove("train.epochs")
    return changed


def find_or_create_run(tracking_uri: str, experiment: str, run_key: str, run_name: str, params: dict[str, str],
                       tags: dict[str, str] | None = None, restart: bool = False) -> str:
    """The id of the run tagged `run_key` in `experiment`, created (with params and tags) if there is none.
    A run already under the key with other params is refused (its record stays true) unless `restart`, which
    moves the old run to the key `<key>.archived-<UTC time>` (kept, never deleted) and creates a new one."""
    from ...loop.preflight import RunRecordError

    mlflow = client(tracking_uri)
    experiment_id = find_or_create_experiment(mlflow, tracking_uri, experiment)
    existing = find_run(mlflow, experiment_id, run_key)
    if existing and restart:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        mlflow.set_tag(existing.info.run_id, RUN_KEY_TAG, f"{run_key}.archived-{stamp}")
        existing = None
    if existing:
        changed = param_changes(existing.data.params, params)
        if changed:
            key = changed[0]
            raise RunRecordError(f"name: MLflow run {existing.info.run_id} ({run_key}) was logged with "
                                 f"{key}={existing.data.params[key]}, this run has {key}={params[key]}; "
                                 f"use a new name, or --restart to archive the old run first")
        mlflow.update_run(existing.info.run_id, status="RUNNING")
        return existing.info.run_id
    run = mlflow.create_run(experiment_id, run_name=run_name, tags={RUN_KEY_TAG: run_key, **(tags or {})})
    log_params(mlflow, run.info.run_id, params)
    return run.info.run_id


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # MLflow 3: model training, not GenAI
EXPERIMENT_NOTE = ("adaptnet runs: training runs, and sweeps as a parent run with one child run per trial "
                   "(`<arm>-s<seed>` in paired comparisons). The parent's `comparison.md` and `cmp/...` metrics hold "
                   "the paired comparison; group the runs table by the `arm` param to compare arms.")


def find_or_create_experiment(mlflow, tracking_uri: str, name: str) -> str:
    """The experiment's id; a new one is marked as model training (MLflow 3's experiment kind), says what it
    holds, and, on a sqlite store, keeps its artifacts beside the database (not in the working directory)."""
    found = mlflow.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    return mlflow.create_experiment(name, artifact_location=sqlite_artifact_root(tracking_uri),
                                    tags={**EXPERIMENT_KIND, "mlflow.note.content": EXPERIMENT_NOTE})


def sqlite_artifact_root(tracking_uri: str) -> str | None:
    """`<database folder>/mlruns` for a sqlite store (MLflow's default would be ./mlruns of whatever folder the
    command ran in), None for a server or PostgreSQL store (the server's own artifact root)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return (Path(tracking_uri[len("sqlite:///"):]).resolve().parent / "mlruns").as_uri()


def log_params(mlflow, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        mlflow.log_batch(run_id, params=items[start:start + 100])


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    """Nested config → flat `section.key` params (MLflow chokes on nested dicts)."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return flat


def metric_key(name: str) -> str:
    """Our metric names as MLflow keys: `holdout/top1_exit3` stays, anything odd becomes '_'."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)
