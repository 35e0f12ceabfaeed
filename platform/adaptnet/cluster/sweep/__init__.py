"""Ray Tune sweeps over adaptnet runs: specs and search spaces, trial configs, the trial trainable, stage
sharing, progress lines, the summary, the driver (`driver.run_sweep`) and what the scripts in sweeps/ share
(`cli`). Uses `run` for multi-worker trials and `tracking` for MLflow."""
