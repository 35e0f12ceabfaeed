"""Ray Train: a typed `WorkerJob` (with hooks for what sweeps add), the one `TorchTrainer` builder used by
`adaptnet train --workers` and multi-worker sweep trials, the worker loop, storage and the Ray Data source.
Imports `tracking`, never `sweep`."""
