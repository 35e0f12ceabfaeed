"""adaptnet: adaptive deep networks (multi-exit MSDNet with IMTA, ADN) trained and swept on Ray.

This top level and models/, techniques/, metrics/, data/, loop/ never import ray or mlflow;
only `adaptnet.cluster` does.
"""
from .models import create_model, list_models

__all__ = ["create_model", "list_models"]
__version__ = "0.1.0"
