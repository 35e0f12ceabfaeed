"""Deployable adaptive models as MLflow pyfunc models: `adaptnet export` (one self-contained model folder,
served by `mlflow models serve`) and the MLflow 3 LoggedModel of a sweep trial's selected checkpoint.

The model is code (`pyfunc_model.py`, no pickled object), ships the adaptnet package (code_paths) and one
bundle file (`adaptnet.deploy.bundle`); a request
is a table with one `image` column of encoded images (base64 in JSON), and for multi-exit nets the
per-request parameter `budget` (multiply-adds per image) picks the held-out-calibrated thresholds.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path

import mlflow.pyfunc
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from ...deploy import DeployError
from ...deploy.bundle import Runner, build_bundle, save_bundle

PACKAGE = Path(__file__).resolve().parents[2]  # the adaptnet package, shipped inside every model
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")  # models from code: no pickled object


QUIET = ".*An input example was not provided"  # the signature is explicit


class AdaptivePyfunc(mlflow.pyfunc.PythonModel):
    """The pyfunc face of `adaptnet.deploy.bundle.Runner`; bad input → MlflowException (HTTP 400)."""

    _skip_type_hint_validation = True  # predict takes a DataFrame checked against the explicit signature

    def load_context(self, context):
        self.runner = Runner(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        if "image" not in getattr(model_input, "columns", ()):
            raise MlflowException("image: the request needs an `image` column of encoded images",
                                  INVALID_PARAMETER_VALUE)
        try:
            out = self.runner.predict(list(model_input["image"]), (params or {}).get("budget"))
        except DeployError as err:
            raise MlflowException(str(err), INVALID_PARAMETER_VALUE) from None
        return pd.DataFrame(out)


def signature(bundle: dict):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    outputs = Schema([ColSpec("long", "class"), ColSpec("string", "label"), ColSpec("long", "exit"),
                      ColSpec("double", "macs")])
    params = ParamSchema([ParamSpec("budget", "double", float(bundle["default_budget"]))]) \
        if bundle["kind"] == "early_exit" else None
    return ModelSignature(inputs=Schema([ColSpec("binary", "image")]), outputs=outputs, params=params)


def requirements() -> list[str]:
    """Pinned to what built the model (explicit, so MLflow does not infer them by loading the model)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "torch", "torchvision", "pillow", "pydantic", "pyyaml",
                                                    "numpy", "pandas")]


def card_markdown(card: dict) -> str:
    lines = [f"# {card['run']} ({card['model']}, {card['technique']})", "",
             f"dataset: `{card['dataset']}`  git commit: `{card.get('git_commit', 'unknown')}`  "
             f"input: {card['input_size']}×{card['input_size']}  classes: {len(card['classes'])}", ""]
    if card["kind"] == "early_exit":
        lines += ["| exit | MMACs | test top-1 | held-out top-1 |", "|---|---|---|---|"]
        lines += [f"| {e['exit']} | {e['macs'] / 1e6:.3f} | {e['test_top1']:.2f} | {e['holdout_top1']:.2f} |"
                  for e in card["exits"]]
        lines += ["", f"default budget: {card['default_budget']:.6g} MACs", "",
                  "| budget MMACs | q | held-out cost MMACs | held-out top-1 | test cost MMACs | test top-1 | thresholds |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {b['budget'] / 1e6:.3f} | {b['q']} | {b['holdout_cost'] / 1e6:.3f} | {b['holdout_accuracy']:.2f} | "
                  f"{b['test_cost'] / 1e6:.3f} | {b['test_accuracy']:.2f} | "
                  f"{', '.join(f'{t:.4g}' for t in b['thresholds'])} |" for b in card["budgets"]]
    else:
        lines += [f"sub-network `{card['skip']}`: {card['macs'] / 1e6:.3f} MMACs, {card['params'] / 1e6:.3f} M params", "",
                  "| skip | MMACs | Mparams | held-out top-1 | test top-1 |", "|---|---|---|---|---|"]
        lines += [f"| {r['skip']} | {r['macs'] / 1e6:.3f} | {r['params'] / 1e6:.3f} | {r['holdout_top1']:.2f} | "
                  f"{r['test_top1']:.2f} |" for r in card["subnets"]]
    return "\n".join(lines) + "\n"


def save_model_dir(bundle: dict, out: Path, mlflow_model=None) -> Path:
    """One pyfunc model folder at `out` (which must not exist or be empty): bundle, model card, code."""
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=QUIET)
        folder = Path(folder)
        path = save_bundle(bundle, folder / "bundle.pt")
        (folder / "model_card.md").write_text(card_markdown(bundle["card"]))
        (folder / "model_card.json").write_text(json.dumps(bundle["card"], indent=1))
        mlflow.pyfunc.save_model(
            str(out), python_model=str(MODEL_CODE),
            artifacts={"bundle": str(path), "model_card": str(folder / "model_card.md"),
                       "model_card_json": str(folder / "model_card.json")},
            signature=signature(bundle), code_paths=[str(PACKAGE)], pip_requirements=requirements(),
            metadata={"adaptnet_kind": bundle["kind"], "adaptnet_run": bundle["card"]["run"]},
            mlflow_model=mlflow_model)
    for pycache in out.rglob("__pycache__"):
        shutil.rmtree(pycache, ignore_errors=True)
    return out


def export(checkpoint: str, out: str, budgets: list[float] | None, skip: str | None, device: str = "cpu") -> Path:
    """`adaptnet export`: every check runs before anything is written."""
    import os

    from .runs import git_commit

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a CLI's output, not a notebook's
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DeployError(f"--out: {out!r} exists and is not an empty folder")
    bundle = build_bundle(checkpoint, budgets, skip, device, extra_card={"git_commit": git_commit()})
    return save_model_dir(bundle, target)
