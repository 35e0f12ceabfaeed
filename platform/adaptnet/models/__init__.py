from .registry import check_model_args, create_model, list_models, model_entry, register_model
from .exits import MultiExitNet, scale_grad
from .skippable import SkippableDepthNet
from . import mobilenet_adn, msdnet, resnet_adn, swin_adn, vit_adn  # noqa: F401  (register their configs)

__all__ = ["check_model_args", "create_model", "list_models", "model_entry", "register_model", "MultiExitNet", "scale_grad", "SkippableDepthNet"]
