"""What every script in sweeps/ shares: presets, flags, validation before any cluster work, joining Ray,
and the summary. A script supplies its presets and how it turns flags into `SweepSpec`s."""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...loop import ConfigError, read_yaml
from ...messages import one_line

# Data sizes of the search scripts' presets: `smoke` runs in minutes on a CPU, `cpu` on real CIFAR-10 subsets.
SMOKE_DATA = ("data.train_subset=256", "data.holdout=128", "data.test_subset=256", "train.epochs=1")
CPU_DATA = ("data.train_subset=5000", "data.holdout=1000", "data.test_subset=2000", "train.epochs=3")
# Slots for the drivers of multi-worker trials (their workers reserve the CPUs): without them a driver's
# sliver of CPU would keep a 2-worker trial from ever fitting on a 2-CPU machine.
LOCAL_RESOURCES = {"trial_driver": 64}


@dataclass(frozen=True)
class Preset:
    """A sweep script's named defaults: the run-config preset it starts from, overrides, and the sweep's size."""
    config: str
    overrides: tuple[str, ...] = ()
    help: str = ""
    trials: int = 4
    seeds: int = 2
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)   # script-specific defaults


class SweepArgumentError(ValueError):
    """A bad flag value, reported on one line before any cluster work."""


class OneLineErrors(argparse.ArgumentParser):
    """Bad flags are one line (not the whole usage block)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def parser(description: str, presets: dict[str, Preset], default: str) -> argparse.ArgumentParser:
    p = OneLineErrors(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="presets:\n" + "\n".join(f"  {k:<16} {v.help}" for k, v in presets.items()))
    p.add_argument("--preset", choices=list(presets), default=default, help=f"sizes and recipe (default {default})")
    p.add_argument("--dataset", help="dataset spec: cifar10 | cifar100 | ImageFolder folder or .tar.gz, local or "
                                     "s3:// (default $ADAPTNET_DATASET, else the preset's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override the base run config, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--name", help="sweep name; rerunning with the same name resumes it (default: script-preset)")
    p.add_argument("--trials", type=_positive, help="trials of each search (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="the searcher's seed")
    p.add_argument("--workers", type=_positive, help="Ray Train workers per trial (1: the trial trains itself)")
    p.add_argument("--cpus-per-worker", type=_positive_float)
    p.add_argument("--gpus-per-worker", type=_non_negative_float)
    p.add_argument("--max-concurrent", type=_positive, help="trials at once (default: what the cluster fits)")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="Ray cluster to join, e.g. auto or 10.0.0.1:6379 (default $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--num-cpus", type=_positive, help="CPUs of the local Ray started when no --address is given")
    p.add_argument("--storage", default=os.environ.get("ADAPTNET_STORAGE"),
                   help="Tune/Train storage: a folder or s3://bucket/prefix (default $ADAPTNET_STORAGE, else ./ray_results)")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                   help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite ./mlflow.db)")
    p.add_argument("--experiment", default="adaptnet-sweeps", help="MLflow experiment")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (trials, stages, workers and GPUs per trial) and its compute (GPU-hours, USD); "
                        "start nothing, write nothing")
    p.add_argument("--no-stage-sharing", dest="share_stages", action="store_false",
                   help="train every trial's stages itself, even those equal to another trial's (e.g. IMTA's stage 1 "
                        "and the GE arm's run of a seed); default: trained once, shared through --storage")
    return p


def _checked(cast, ok, rule: str):
    """An argparse type: `cast` the text, then require `ok(value)` (else the one-line `rule`)."""
    def convert(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{rule}, got {value}")
        return value
    return convert


_positive = _checked(int, lambda v: v >= 1, "must be at least 1")


def _batch_list(text: str) -> tuple[int, ...]:
    return tuple(_positive(b) for b in text.split(",") if b.strip())
_positive_float = _checked(float, lambda v: v > 0, "must be positive")
_non_negative_float = _checked(float, lambda v: v >= 0, "must not be negative")


def base_tree(args, preset: Preset) -> dict:
    """The preset's run config with the preset's and the user's overrides and the dataset applied (validated)."""
    from ...loop import build_config

    dataset = args.dataset or os.environ.get("ADAPTNET_DATASET")
    items = list(preset.overrides)
    if dataset:
        items.append(f"data.dataset={str(Path(dataset).resolve()) if Path(dataset).exists() else dataset}")
    cfg = build_config(read_yaml(preset.config), items + list(args.overrides))
    tree = cfg.model_dump()
    tree.pop("output_dir")  # each trial sets its own
    return tree


def resolved(args, preset: Preset) -> dict[str, Any]:
    """Cluster-side sizes: the flag when given, else the preset's (checked: whole GPUs for DDP trials)."""
    from ..preflight import check_resources

    sizes = {"workers": args.workers or preset.workers,
             "cpus_per_worker": args.cpus_per_worker or preset.cpus_per_worker,
             "gpus_per_worker": preset.gpus_per_worker if args.gpus_per_worker is None else args.gpus_per_worker}
    check_resources(sizes["cpus_per_worker"], sizes["gpus_per_worker"], workers=sizes["workers"])
    return {**sizes, "max_concurrent": args.max_concurrent, "storage": args.storage,
            "tracking_uri": _absolute_sqlite(args.tracking_uri), "experiment": args.experiment,
            "share_stages": args.share_stages}


def _absolute_sqlite(uri: str | None) -> str:
    from ..tracking.store import resolve_tracking_uri

    uri = resolve_tracking_uri(uri)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"  # trial processes start elsewhere
    return uri


def preflight(args, base: dict, tracking_uri: str) -> None:
    """Everything a sweep needs that can be checked here, before `ray.init` and before any MLflow run: the
    sweep name, the dataset, per-trial resources, the tracking server, storage and the Ray address."""
    from ...loop.config import safe_name
    from ...loop.preflight import check_dataset
    from ..preflight import check_cluster, check_resources

    if args.name is not None:
        try:
            safe_name(args.name)
        except ValueError as err:
            raise SweepArgumentError(f"--name: {err} (got {args.name!r})") from None
    check_dataset(base["data"]["dataset"], "--dataset" if args.dataset else "data.dataset")
    check_resources(args.cpus_per_worker, args.gpus_per_worker)
    field = "--tracking-uri" if args.tracking_uri else "MLFLOW_TRACKING_URI"
    check_cluster(tracking_uri, field, args.address, args.storage, args.experiment)


def connect(args) -> None:
    """Joins the given Ray cluster, or starts a private local one (never attaching to a stray cluster). Ray's
    and MLflow's INFO lines go to the session's logs folder, not the user's terminal."""
    import logging

    from ..run.runtime import DRIVER_ENV, quiet_mlflow_logging, runtime_env

    for key, value in DRIVER_ENV.items():  # read when Ray is imported, so before that
        os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        return
    if args.address:
        # inside `ray job submit` the job's runtime env is already the driver's: Ray refuses to merge another
        in_job = "RAY_JOB_ID" in os.environ or "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
        ray.init(address=args.address, runtime_env=None if in_job else runtime_env(), logging_level=logging.WARNING)
    else:
        ray.init(address="local", num_cpus=args.num_cpus, resources=LOCAL_RESOURCES, runtime_env=runtime_env(),
                 logging_level=logging.WARNING)
    quiet_mlflow_logging()


def main_guard(run) -> int:
    """Runs a script's main; bad input is one line on stderr and exit code 2."""
    from ...data import DataError

    try:
        return run() or 0
    except (ConfigError, DataError, SweepArgumentError) as err:
        print(f"{Path(sys.argv[0]).name}: error: {one_line(err)}", file=sys.stderr)
        return 2


def mlflow_ui_hint(tracking_uri: str, parent_run_id: str | None = None, view: str | None = None) -> str:
    """How to open the sweep in the MLflow UI: the experiment's runs table in the UI's model-training mode (MLflow
    3's UI otherwise opens on its GenAI overview), in the saved `view` when there is one."""
    page = ""
    if parent_run_id:
        from ..tracking.store import client

        page = (f"#/experiments/{client(tracking_uri).get_run(parent_run_id).info.experiment_id}/runs"
                f"?workflowType=machine_learning" + (f"&viewStateShareKey={view}" if view else ""))
    if tracking_uri.startswith(("http://", "https://")):
        return f"MLflow UI: {tracking_uri.rstrip('/')}/{page}"
    return (f"open the MLflow UI:  .venv/bin/mlflow ui --backend-store-uri {tracking_uri}   "
            f"(then http://127.0.0.1:5000/{page})")


def print_trials(result, columns: list[str]) -> None:
    from .summary import markdown, trial_rows

    print(markdown(trial_rows(result.trials, columns)))


def search_main(description: str, presets: dict[str, Preset], default: str, make_space, objectives=None,
                extra_flags=None, budgets=None, asha: bool = True) -> int:
    """A whole search script: flags → validated spec → Ray → Tune sweep → summary printed and logged.
    `make_space(args, base)` builds the space; `budgets(base)` gives the final evaluation's cost budgets."""
    p = parser(description, presets, default)
    if asha and (not objectives or callable(objectives)):
        p.add_argument("--no-asha", dest="asha", action="store_false", help="no early stopping: every trial runs out")
    p.add_argument("--latency-batches", type=_batch_list, default=(), metavar="B,B",
                   help="measure each trial's selected model's latency per image on its own device at these batch "
                        "sizes, e.g. 1,64 (final/latency_ms_*; see the script's --objective)")
    if extra_flags:
        extra_flags(p)
    args = p.parse_args()

    def run() -> int:
        from .summary import log_sweep_summary, summary_columns
        from ..tracking.results import SCORE
        from ..tracking.store import client
        from .driver import run_sweep, validate
        from .spec import Objective, SweepSpec

        preset = presets[args.preset]
        base = base_tree(args, preset)
        where = resolved(args, preset)
        if not args.dry_run:
            preflight(args, base, where["tracking_uri"])
        spec = SweepSpec(name=args.name or f"{Path(sys.argv[0]).stem}-{args.preset}", base=base,
                         space=make_space(args, base), num_samples=args.trials or preset.trials,
                         objectives=tuple((objectives(args) if callable(objectives) else objectives)
                                          or (Objective(SCORE, "max"),)), asha=getattr(args, "asha", False),
                         seed=args.seed, budgets=tuple(budgets(base) if budgets else ()),
                         latency_batches=tuple(args.latency_batches), **where)
        spec.asha = spec.asha and len(spec.objectives) == 1  # ASHA stops on the score alone
        validate(spec)
        if args.dry_run:
            from .plan import sweep_plan_lines

            print("\n".join(sweep_plan_lines(spec, args.preset)))
            return 0
        connect(args)
        result = run_sweep(spec, preset=args.preset)
        print_trials(result, summary_columns(result)[:8])
        if len(spec.objectives) > 1:
            print(f"Pareto front ({', '.join(f'{o.metric} {o.mode}' for o in spec.objectives)}): "
                  + ", ".join(t.name for t in result.pareto_front()))
        best = result.best()
        print(f"best trial: {best.name if best else '-'}  {best.params if best else ''}")
        log_sweep_summary(spec.tracking_uri, result)
        failed = [t for t in result.trials if t.status == "FAILED"]
        client(spec.tracking_uri).set_terminated(result.parent_run_id, "FAILED" if failed else "FINISHED")
        print(mlflow_ui_hint(spec.tracking_uri, result.parent_run_id))
        return 1 if failed else 0

    return main_guard(run)


def comparison_setting(base: dict):
    """The setting published numbers would have to share with this comparison (metrics.references): the
    dataset (inspected: classes and training images), the model config, epochs and whether subsets are used."""
    from ...data import inspect_dataset
    from ...metrics.references import Setting, dataset_identity

    data, model = base["data"], base["model"]
    info = inspect_dataset(data["dataset"], data["cache_dir"])
    args = " ".join(f"{k}={v}" for k, v in sorted(model["args"].items()))
    return Setting(dataset_identity(data["dataset"], len(info.classes), info.counts["train"]),
                   f"{model['name']} {args}".strip(), base["train"]["epochs"],
                   full_data=not (data["train_subset"] or data["test_subset"]))


def cost_budgets(base: dict, fractions=(0.25, 0.5, 0.75)) -> list[float]:
    """Multiply-add budgets for the final evaluation, as fractions of the way from the cheapest to the full
    network of the base config (exit 1 → exit K, or base-net → super-net)."""
    import json

    from ...models import model_entry
    from .plan import cheapest_and_full

    name = base["model"]["name"]
    cheapest, full = cheapest_and_full(name, json.dumps(base["model"]["args"], sort_keys=True),
                                       model_entry(name).input_size)
    return [cheapest + f * (full - cheapest) for f in fractions]
