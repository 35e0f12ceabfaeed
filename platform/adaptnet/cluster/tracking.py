"""MLflow tracking through explicit run ids (MlflowClient), never the fluent thread-local API.

The driver finds or creates the run (one per run key: storage + run name), so a rerun of the same command
keeps logging into the same run. Rank 0 logs one batch of metrics per epoch. Logging is idempotent per
epoch (steps already in the run are skipped) and survives a tracking server that is down: unsent epochs
stay queued, are kept in the checkpoint, and are retried.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import time
from pathlib import Path

RUN_KEY_TAG = "adaptnet.run_key"
TIMESTAMP_KEY = "logged_at_ms"  # when an epoch was queued; its MLflow timestamp, not a metric
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


@contextlib.contextmanager
def fast_fail():
    """MLflow requests inside fail at once instead of MLflow's own minutes-long retry loop (training must
    not stall); the environment is restored after, so other calls (run lookup, creation) keep retrying."""
    saved = {k: os.environ.get(k) for k in FAST_FAIL_ENV}
    os.environ.update(FAST_FAIL_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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
    from ..loop.preflight import RESUME_SAFE

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
    from ..loop.preflight import RunRecordError

    mlflow = client(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else mlflow.create_experiment(experiment)
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


class EpochLogger:
    """Rank 0's per-epoch metrics → MLflow, queued until the server has them."""

    def __init__(self, tracking_uri: str, run_id: str, pending: list[dict] | None = None):
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self.pending: list[dict] = list(pending or [])
        self._mlflow = None

    def add(self, epoch_metrics: dict) -> None:
        self.pending.append({**epoch_metrics, TIMESTAMP_KEY: int(time.time() * 1000)})

    def flush(self) -> bool:
        """Sends every queued epoch not already in the run (by step, default the epoch); False (and keeps the
        queue) if MLflow is down."""
        if not self.pending:
            return True
        try:
            with fast_fail():
                self._flush()
        except Exception:  # noqa: BLE001 — any tracking failure must leave training running
            return False
        self.pending = []
        return True

    def _flush(self) -> None:
        from mlflow.entities import Metric

        self._mlflow = self._mlflow or client(self.tracking_uri)
        logged = {m.step for m in self._mlflow.get_metric_history(self.run_id, "epoch")}
        for metrics in self.pending:
            step = int(metrics.get("step", metrics["epoch"]))  # multi-stage runs count steps across stages
            if step in logged:
                continue
            # the epoch's own timestamp: a batch resent after a half-done attempt repeats identical metrics,
            # which MLflow stores once
            now = int(metrics.get(TIMESTAMP_KEY, time.time() * 1000))
            batch = [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items()
                     if isinstance(v, (int, float)) and k not in ("epoch", "step", TIMESTAMP_KEY)]
            batch.append(Metric("epoch", float(metrics["epoch"]), now, step))  # last: marks the step complete
            self._mlflow.log_batch(self.run_id, metrics=batch)
            logged.add(step)

    def flush_until(self, timeout_s: float, interval_s: float = 2.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.flush():
            if time.monotonic() > deadline:
                return False
            time.sleep(interval_s)
        return True
