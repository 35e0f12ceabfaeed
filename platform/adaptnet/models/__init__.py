from .registry import create_model, list_models, model_entry, register_model
from .exits import MultiExitNet, scale_grad
from . import msdnet  # noqa: F401  (registers its configs)

__all__ = ["create_model", "list_models", "model_entry", "register_model", "MultiExitNet", "scale_grad"]
