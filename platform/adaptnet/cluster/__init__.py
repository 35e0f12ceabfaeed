"""The one subpackage that imports ray and mlflow, in three rooms layered sweep → run → tracking:

- `tracking/`: MLflow (run store and filters, per-epoch logging, trial results, artifacts, LoggedModels and the
  registry, views, system metrics, the pyfunc export).
- `run/`: Ray Train (the typed worker job, the one TorchTrainer builder, the worker loop, storage, Ray Data).
- `sweep/`: Ray Tune (specs, trial configs, trials, stage sharing, progress, summary, the scripts' CLI).

`preflight` checks cluster inputs before any of them starts, and imports neither Ray nor MLflow.
"""
