"""A framework-free training loop: config → data → model → task → epochs → checkpoints."""
from .config import ConfigError, RunConfig, build_config, load_config, preset_names, read_yaml
from .trainer import Distributed, FitResult, evaluate, fit
from .pipeline import run, stage_configs

__all__ = ["ConfigError", "RunConfig", "build_config", "load_config", "preset_names", "read_yaml",
           "Distributed", "FitResult", "evaluate", "fit", "run", "stage_configs"]
