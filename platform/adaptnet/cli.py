"""`adaptnet` command line: models, costs, train."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from .messages import one_line


def _costs(args) -> int:
    from .metrics.costs import costs_report
    from .models import create_model, model_entry

    entry = model_entry(args.model)
    size = entry.input_size if args.input_size is None else args.input_size
    model = create_model(args.model, args.num_classes)
    convention = args.convention or entry.cost_convention
    try:
        report = costs_report(args.model, model, size, convention)
    except (RuntimeError, AssertionError, ValueError) as err:  # e.g. a feature map shrunk to nothing
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise ValueError(f"--input-size: {size} does not fit {args.model} ({reason})") from None
    report["num_classes"] = args.num_classes or entry.num_classes
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.model}  ({report['num_classes']} classes, {size}×{size}, {convention} convention)")
    rows = report.get("exits") or report["configs"]
    key = "exit" if "exits" in report else "skip"
    print(f"{key:>6}  {'MMACs':>10}  {'Mparams':>8}")
    for row in rows:
        print(f"{row[key]:>6}  {row['macs'] / 1e6:>10.2f}  {row['params'] / 1e6:>8.3f}")
    return 0


def _train(args) -> int:
    from .loop import load_config, run, stage_configs

    from .loop.preflight import check_train

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        from .loop.plan import plan_lines

        print("\n".join(plan_lines(cfg, args.workers or 1, on_ray=args.workers is not None,
                                    gpu_memory_gb=args.gpu_memory_gb,
                                    cpus_per_rank=int(args.cpus_per_worker) if args.workers else None)))
        return 0
    if args.workers is None:
        check_device(cfg.train.device, "train.device")
    else:
        from .cluster.preflight import check_cluster, check_resources
        from .cluster.tracking.store import resolve_tracking_uri

        check_resources(args.cpus_per_worker, args.gpus_per_worker, workers=args.workers)
        field = "MLFLOW_TRACKING_URI" if not args.tracking_uri and os.environ.get("MLFLOW_TRACKING_URI") else "--tracking-uri"
        check_cluster(resolve_tracking_uri(args.tracking_uri), field, args.address, args.storage, args.experiment)
    archived = check_train(cfg, restart=args.restart, workers=args.workers, gpus_per_worker=args.gpus_per_worker)
    if archived:
        print(f"archived the old run to {archived}", file=sys.stderr)
    if args.workers is None:
        for result in run(cfg):
            print(f"run directory: {result.run_dir}")
            print(format_output_table(result.metrics))
        return 0
    from .cluster.run.train import ClusterOptions, train_on_ray

    options = ClusterOptions(workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                             gpus_per_worker=args.gpus_per_worker, address=args.address, storage=args.storage,
                             max_failures=args.max_failures, experiment=args.experiment,
                             tracking_uri=args.tracking_uri, restart=args.restart)
    result = None
    for stage in stage_configs(cfg):
        result = train_on_ray(stage, options, handoff=result.checkpoint if result else None)
        print(f"{stage.name}: checkpoint {result.checkpoint.path if result.checkpoint else '-'}")
        print(format_output_table(result.metrics or {}))
    return 0


def _data(args) -> int:
    from .data import inspect_dataset
    from .data.resolve import resolve_dataset_spec  # cifar10/cifar100 name the mirror, as in configs

    if args.data_command == "inspect":
        info = inspect_dataset(resolve_dataset_spec(args.spec), sample=args.sample)
        print(info.to_json() if args.json else info.summary())
        return 0
    from .data.shards import write_shards

    index = write_shards(resolve_dataset_spec(args.src), args.dst, args.shard_size)
    counts = ", ".join(f"{split} {table['count']}" for split, table in index["splits"].items())
    print(f"{args.dst}: {len(index['shards'])} shards, {len(index['classes'])} classes ({counts}) + index.json and "
          f"{', '.join(t['samples'] for t in index['splits'].values())}")
    return 0


def _evaluate(args) -> int:
    from .loop.evaluate import evaluate_checkpoint
    from .loop.preflight import saved_config

    check_device(args.device, "--device")
    for path in args.checkpoints:  # every checkpoint is readable and its config valid before any is evaluated
        saved_config(path)
    if args.plot_dir and Path(args.plot_dir).exists() and not Path(args.plot_dir).is_dir():
        raise ValueError(f"--plot-dir: {args.plot_dir!r} exists and is not a folder")
    results = [evaluate_checkpoint(path, args.budgets, args.device, bool(args.predictions)) for path in args.checkpoints]
    if args.predictions:
        from .loop.evaluate import write_predictions

        write_predictions(results, args.predictions)
    if args.plot_dir:
        from .metrics.plots import plot_runs

        plot_runs(results, args.plot_dir)
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results))
        return 0
    for result in results:
        print(f"{result['run']} ({result['technique']}, {result['model']})")
        if "subnets" in result:
            _print_subnets(result)
            continue
        print(f"{'exit':>4}  {'MMACs':>9}  {'top1':>6}  {'top5':>6}")
        for k, macs in enumerate(result["exit_macs"]):
            print(f"{k + 1:>4}  {macs / 1e6:>9.2f}  {result['anytime']['top1'][k]:>6.2f}  {result['anytime']['top5'][k]:>6.2f}")
        print(f"budgeted: mean accuracy over the cost range {result['budgeted']['area']:.2f}%")
        for budget, acc in zip(result["budgeted"]["budgets"], result["budgeted"]["accuracy_at_budgets"]):
            print(f"  at {budget / 1e6:.2f} MMACs: " + ("outside the curve" if acc is None else f"{acc:.2f}%"))
    return 0


def _print_subnets(result: dict) -> None:
    """An ADN report: every sub-network, the held-out Pareto front and the choice per budget."""
    print(f"{'skip':>8}  {'MMACs':>9}  {'holdout top1':>12}  {'test top1':>9}  {'test top5':>9}")
    for row in result["subnets"]:
        print(f"{row['skip']:>8}  {row['macs'] / 1e6:>9.2f}  {row['holdout_top1']:>12.2f}  {row['test_top1']:>9.2f}  "
              f"{row['test_top5']:>9.2f}")
    print("Pareto front (held-out top-1 vs MACs, cheapest first): " + " ".join(result["pareto_front"]))
    for entry in result["budgets"]:
        choice = entry["choice"]
        print(f"  at {entry['budget'] / 1e6:.2f} MMACs: " +
              ("no sub-network fits" if choice is None else f"{choice['skip']} ({choice['test_top1']:.2f}% test)"))


def _export(args) -> int:
    from .cluster.tracking.export import export

    print(f"model: {export(args.checkpoint, args.out, args.budget, args.skip, args.device)}")
    return 0


def format_output_table(metrics: dict) -> str:
    """Accuracy of each named output (exit k, or super/base) in one epoch's metrics, as a small table."""
    names = [k.split("top1_", 1)[1] for k in metrics if k.startswith("test/top1_")]
    lines = [f"{'output':>6}  {'train top1':>10}  {'holdout top1':>12}  {'test top1':>9}  {'test top5':>9}"]
    for name in names:
        cells = [metrics.get(f"{split}_{name}") for split in ("train/top1", "holdout/top1", "test/top1", "test/top5")]
        lines.append(f"{name:>6}  " + "  ".join(f"{'-' if v is None else f'{v:.2f}':>{w}}"
                                                for v, w in zip(cells, (10, 12, 9, 9))))
    return "\n".join(lines)


def check_device(choice: str, field: str) -> None:
    if choice == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"{field}: cuda was asked for but no CUDA device is visible")


def _int_between(low: int, high: int):
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value
    return convert


_positive_int = _int_between(1, 10_000)


def _budgets(text: str) -> list[float]:
    """Comma-separated positive, finite multiply-add budgets."""
    try:
        values = [float(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 20e6,40e6, got {text!r}") from None
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"budgets must be positive finite numbers, got {text!r}")
    return values


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


class OneLineParser(argparse.ArgumentParser):
    """Bad flags are one line on stderr (`adaptnet: error: ...`, exit 2), not the usage block."""

    def error(self, message: str):
        self.exit(2, f"adaptnet: error: {one_line(message)} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="adaptnet", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list the registered model configs")
    c = sub.add_parser("costs", help="cumulative multiply-adds and parameters per exit")
    c.add_argument("model")
    c.add_argument("--num-classes", type=_int_between(1, 100_000), default=None, help="default: the config's dataset")
    c.add_argument("--input-size", type=_int_between(1, 4096), default=None,
                   help="default: 32 for CIFAR configs, 224 for ImageNet")
    c.add_argument("--torchvision", dest="convention", action="store_const", const="torchvision",
                   help="plain conv + linear (+ attention) multiply-adds, no ReLU, pooling or bias ops")
    c.add_argument("--reference", dest="convention", action="store_const", const="reference",
                   help="the MSDNet counter's convention (default for MSDNet; ADN defaults to torchvision's)")
    c.add_argument("--ptflops", dest="convention", action="store_const", const="ptflops",
                   help="ptflops's convention: adds norm, activation, pooling and bias ops (MobileNetV2-ADN's default)")
    c.add_argument("--json", action="store_true")
    t = sub.add_parser("train", help="train one run from a YAML config or preset")
    t.add_argument("config", help="a YAML file or a preset name (see `adaptnet presets`)")
    t.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.epochs=2")
    t.add_argument("--dry-run", action="store_true", help="validate, inspect the dataset, print the plan; write nothing")
    t.add_argument("--gpu-memory-gb", type=_finite_float, default=24.0,
                   help="--dry-run: the GPU memory each worker's micro-batch must fit (default 24: the A10G of "
                        "clusters/aws.yaml; 80 for an A100/H100 80 GB)")
    t.add_argument("--restart", action="store_true",
                   help="the run directory holds another run: archive it to <name>.archived-<time>, then start anew")
    ray_args = t.add_argument_group("on a Ray cluster (Ray Train; given --workers)")
    ray_args.add_argument("--workers", type=_positive_int, help="Ray Train workers (DDP); omit to train in this process")
    ray_args.add_argument("--cpus-per-worker", type=_finite_float, default=1.0)
    ray_args.add_argument("--gpus-per-worker", type=_finite_float, default=None,
                          help="GPUs per worker (default: 1 on a cluster with GPUs, else 0; whole GPUs with several "
                               "workers)")
    ray_args.add_argument("--address", help="join this Ray cluster (e.g. auto, 10.0.0.1:6379); default: a local one")
    ray_args.add_argument("--storage", help="checkpoint storage: a folder or s3://bucket/prefix (default ./ray_results)")
    ray_args.add_argument("--max-failures", type=_int_between(-1, 1000), default=2,
                          help="worker-group restarts from the last checkpoint (-1: no limit)")
    ray_args.add_argument("--experiment", default="adaptnet", help="MLflow experiment")
    ray_args.add_argument("--tracking-uri", help="MLflow: http(s)://, sqlite:/// or postgresql:// "
                                                 "(default $MLFLOW_TRACKING_URI, else sqlite ./mlflow.db)")
    sub.add_parser("presets", help="list the shipped run configs")
    d = sub.add_parser("data", help="dataset tools: inspect a spec, write tar shards")
    dsub = d.add_subparsers(dest="data_command", required=True)
    di = dsub.add_parser("inspect", help="classes, counts per split, image sizes (a few headers, no decode)")
    di.add_argument("spec")
    di.add_argument("--sample", type=_positive_int, default=64, help="image headers read per split")
    di.add_argument("--json", action="store_true")
    ds = dsub.add_parser("shard", help="ImageFolder → WebDataset-style tar shards + index.json (folder or s3://)")
    ds.add_argument("src")
    ds.add_argument("dst")
    ds.add_argument("--shard-size", type=_positive_int, default=1000, help="images per shard")
    e = sub.add_parser("evaluate", help="anytime and budgeted evaluation of checkpoints (held-out thresholds)")
    e.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT")
    e.add_argument("--budgets", type=_budgets, default=[],
                   help="comma-separated multiply-add budgets to interpolate accuracy at, e.g. 20e6,40e6")
    e.add_argument("--plot-dir", help="write anytime.png and budgeted.png here, all checkpoints overlaid")
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    e.add_argument("--json", action="store_true")
    e.add_argument("--predictions", metavar="CSV", help="write each test image's class and exit at every budget")
    x = sub.add_parser("export", help="an MLflow pyfunc model: early exit at a budget, or one ADN sub-network")
    x.add_argument("checkpoint", metavar="CHECKPOINT")
    what = x.add_mutually_exclusive_group(required=True)
    what.add_argument("--budget", type=_budgets,
                      help="multi-exit nets: MACs per image, comma-separated; the first is a request's default")
    what.add_argument("--skip", help="ADN nets: the sub-network, one letter per stage (T = skipped), e.g. TTFF")
    x.add_argument("--out", required=True, help="the model folder to create (must not exist or be empty)")
    x.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from .data import DataError
    from .loop import ConfigError, preset_names
    from .loop.checkpoint import CheckpointError
    from .models import list_models

    try:
        if args.command == "models":
            print("\n".join(list_models()))
            return 0
        if args.command == "presets":
            print("\n".join(preset_names()))
            return 0
        return {"costs": _costs, "train": _train, "evaluate": _evaluate, "data": _data, "export": _export}[args.command](args)
    except (ConfigError, DataError, CheckpointError, ValueError) as err:
        print(f"adaptnet: error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
