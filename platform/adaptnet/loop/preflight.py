"""Checks that run before any work (no Ray, no MLflow run, no file written): the dataset is there, the run
directory holds no other run, and every checkpoint the run starts from fits the model it asks for.

Each failure is one line naming the field and the value (a `ConfigError`, `DataError` or `CheckpointError`).
Run records are immutable: a run directory whose `config.json` differs from the new config is refused; a
resume may only extend `train.epochs` (RESUME_SAFE lists what else may differ: where the run directory lives,
the progress bar, the resume switch). `restart=True` first archives the old run directory to `<name>.archived-<UTC time>`.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from ..data import DataError, decode_on, inspect_dataset
from ..data.plan import decide
from .checkpoint import CheckpointError, load_checkpoint
from .config import ConfigError, RunConfig, micro_batch

# Fields a rerun of the same run may change: where the run directory is given from, the progress bar, the
# resume switch (resume: false over an existing run is refused on its own).
RESUME_SAFE = ("output_dir", "train.progress", "train.resume")
PATH_FIELDS = ("data.dataset", "data.cache_dir", "data.split_from", "imta.stage1_checkpoint", "adn.teacher_checkpoint")
S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class RunRecordError(ConfigError):
    """A run directory (or tracking run) that already holds a different run."""


def check_dataset(spec: str, field: str = "data.dataset", cache_dir: str | None = None):
    """The dataset is reachable (a shipped name, an existing local path, or a well-formed s3:// spec) and
    well-formed: its listing and a few image headers are read (`adaptnet data inspect`), nothing is decoded.
    Returns what was inspected (None for the shipped names)."""
    if spec.lower() in ("cifar10", "cifar100"):
        return None
    _check_spec(spec, field)
    try:
        return inspect_dataset(spec, cache_dir)
    except DataError as err:
        message = str(err)
        raise DataError(message.replace("data.dataset:", f"{field}:", 1) if field != "data.dataset" else message) from None


def check_input_size(cfg: RunConfig, plan) -> int:
    """The model runs on the images the loader will hand it (a forward pass on the 'meta' device: shapes only,
    nothing computed); returns their side. `plan`: the run's `DataPlan`."""
    import torch

    from ..models import create_model

    info, size = plan.info, plan.eval_size
    try:
        with torch.device("meta"):
            create_model(cfg.model.name, num_classes=len(info.classes) or None, **cfg.model.args)(
                torch.zeros(1, 3, size, size))
    except RuntimeError as err:  # e.g. a CIFAR network on 224-pixel crops, or the reverse
        why = str(err).splitlines()[0]
        if not info.one_size and cfg.data.transform == "auto":
            s = info.sizes.get("train", {})
            raise DataError(f"data.dataset: {info.spec!r} holds images of several sizes ({s.get('min')} to "
                            f"{s.get('max')} sampled), so data.transform auto crops {size}×{size}, which "
                            f"{cfg.model.name} cannot run on ({why}); data.transform: cifar skips the odd "
                            "images") from None
        raise ConfigError(f"data.augment.eval_crop: {cfg.model.name} cannot run on {size}×{size} images "
                          f"({why})") from None
    return size


def _check_spec(spec: str, field: str) -> None:
    if spec.startswith("s3://"):
        bucket, _, key = spec[len("s3://"):].partition("/")
        if not S3_BUCKET.match(bucket) or ".." in bucket:
            raise DataError(f"{field}: {spec!r} has no valid S3 bucket name ({bucket!r})")
        if not key.strip("/"):
            raise DataError(f"{field}: {spec!r} names a bucket but no key (s3://bucket/path/to/dataset.tar.gz)")
        return
    if "://" in spec:
        raise DataError(f"{field}: {spec!r} has an unsupported scheme (cifar10, cifar100, a local path or s3://)")
    if not Path(spec).expanduser().exists():
        raise DataError(f"{field}: {spec!r} does not exist (expected cifar10, cifar100, an ImageFolder folder or "
                        f".tar.gz, local or s3://)")


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "args":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _comparable(tree: dict) -> dict:
    flat = _flat(tree)
    for key in PATH_FIELDS:  # a path given relative here and absolute there is the same path
        value = flat.get(key)
        if isinstance(value, str) and "://" not in value and Path(value).expanduser().exists():
            flat[key] = str(Path(value).expanduser().resolve())
    return {k: v for k, v in flat.items() if k not in RESUME_SAFE}


def config_changes(saved: dict, new: dict) -> list[str]:
    """Dotted fields where `new` differs from the saved run's config, beyond resume-safe changes
    (`train.epochs` may grow: the run continues)."""
    a, b = _comparable(saved), _comparable(new)
    changed = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if "train.epochs" in changed and isinstance(a.get("train.epochs"), int) and b["train.epochs"] > a["train.epochs"]:
        changed.remove("train.epochs")
    return changed


def _shown(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_run_record(cfg: RunConfig, restart: bool = False) -> Path | None:
    """Refuses (one line) a run directory that holds a run with another config, or one that
    `train.resume: false` would overwrite. With `restart`, archives it instead; returns the archive."""
    run_dir = cfg.run_dir
    if not run_dir.exists():
        return None
    if not run_dir.is_dir():
        raise RunRecordError(f"name: {str(run_dir)!r} exists and is not a run directory")
    if restart:
        archive = run_dir.with_name(f"{run_dir.name}.archived-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        run_dir.rename(archive)  # never deleted: the old record stays readable under its new name
        return archive
    hint = "use a new name, or --restart to archive the old run first"
    for stage_dir, stage_cfg in _stage_dirs(cfg):
        saved_file = stage_dir / "config.json"
        if not saved_file.exists():
            continue
        try:
            saved = json.loads(saved_file.read_text())
        except (OSError, ValueError):
            raise RunRecordError(f"name: {str(saved_file)!r} is unreadable; {hint}") from None
        changed = config_changes(saved, stage_cfg.model_dump())
        if changed:
            key = changed[0]
            raise RunRecordError(
                f"name: {str(stage_dir)!r} already holds a run with {key}={_shown(_comparable(saved).get(key))}, "
                f"this config has {key}={_shown(_comparable(stage_cfg.model_dump()).get(key))}; {hint}")
        if not cfg.train.resume:
            raise RunRecordError(f"train.resume: false would overwrite the run in {str(stage_dir)!r}; {hint}")
        check_checkpoint_model(stage_dir / "checkpoints" / "last.pt", stage_cfg, "train.resume", must_exist=False)
    return None


def _stage_dirs(cfg: RunConfig) -> list[tuple[Path, RunConfig]]:
    from .pipeline import stage_configs

    stages = stage_configs(cfg)
    return [(cfg.run_dir, cfg)] if len(stages) == 1 else [(s.run_dir, s) for s in stages]


def _model_of(state: dict) -> tuple[str, dict, str]:
    config = state.get("config") if isinstance(state.get("config"), dict) else {}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    return str(model.get("name")), model.get("args") or {}, str(config.get("technique"))


def check_checkpoint_model(path: str | Path, cfg: RunConfig, field: str, must_exist: bool = True,
                           techniques: tuple[str, ...] | None = None) -> None:
    """The checkpoint at `path` holds the model (name and constructor arguments) that `cfg` asks for."""
    path = Path(path)
    if not path.exists() and not must_exist:
        return
    try:
        state = load_checkpoint(path)
    except CheckpointError as err:
        raise CheckpointError(f"{field}: {err}") from None
    name, args, technique = _model_of(state)
    if (name, args) != (cfg.model.name, cfg.model.args) or (techniques and technique not in techniques):
        held = f"{name} {json.dumps(args)}" if args else name
        asked = f"{cfg.model.name} {json.dumps(cfg.model.args)}" if cfg.model.args else cfg.model.name
        if techniques and technique not in techniques:
            held, asked = f"a {technique} run of {held}", f"a {'/'.join(techniques)} run of {asked}"
        raise CheckpointError(f"{field}: {str(path)!r} holds {held}, the config asks for {asked}")


def saved_config(path: str | Path) -> tuple[dict, RunConfig]:
    """(checkpoint, its run config), the config validated: a stale one is one line, not pydantic's dump."""
    from pydantic import ValidationError

    from .config import _one_line

    state = load_checkpoint(path)
    try:
        return state, RunConfig.model_validate(state["config"])
    except ValidationError as err:
        raise CheckpointError(f"checkpoint: {str(path)!r} holds a config that no longer validates: "
                              f"{_one_line(err)}") from None


def check_train(cfg: RunConfig, restart: bool = False, workers: int | None = None,
                gpus_per_worker: float | None = None) -> Path | None:
    """Everything `adaptnet train` can check before it trains (`workers`: on Ray, how many, with
    `gpus_per_worker`, None when Ray decides); returns the archived run directory, if any."""
    info = check_dataset(cfg.data.dataset, cache_dir=cfg.data.cache_dir)
    plan = decide(cfg.data, on_ray=workers is not None, info=info)
    if cfg.data.decode == "gpu":
        from .trainer import pick_device

        cuda = pick_device(cfg.train.device).type == "cuda" if workers is None else gpus_per_worker != 0
        decode_on(cfg.data.decode, plan.kind, "cuda" if cuda else "cpu")  # without CUDA: one line naming the field
    if info is not None:  # a dataset of files (torchvision's arrays are CIFAR's 32 × 32)
        check_input_size(cfg, plan)
    from .pipeline import stage_configs

    for stage in stage_configs(cfg):
        micro_batch(stage, workers or 1)
    if cfg.data.split_from:
        try:
            saved_config(cfg.data.split_from)
        except CheckpointError as err:
            raise CheckpointError(f"data.split_from: {err}") from None
    if cfg.technique == "imta_stage2" and cfg.imta.stage1_checkpoint:
        check_checkpoint_model(cfg.imta.stage1_checkpoint, cfg, "imta.stage1_checkpoint", techniques=("multi_exit",))
    if cfg.technique == "depth_kd" and cfg.adn.teacher_checkpoint:
        check_checkpoint_model(cfg.adn.teacher_checkpoint, cfg, "adn.teacher_checkpoint",
                               techniques=("single_depth", "adn_distill"))
    return check_run_record(cfg, restart)
