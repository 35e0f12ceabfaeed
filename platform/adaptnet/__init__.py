"""adaptnet: adaptive deep networks (multi-exit MSDNet with IMTA, ADN) trained and swept on Ray.

This top level and models/, techniques/, metrics/, data/, loop/ never import ray or mlflow;
only `adaptnet.cluster` does.

`create_model` and `list_models` are imported on first use: every Ray worker process imports this package
for its setup hook (`adaptnet.cluster.run.runtime`), and most of them (Ray Train's controller, placement-group
cleaner, idle workers, …) never build a model, so they must not pay for importing torch and every model family.
"""

__all__ = ["create_model", "list_models"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in __all__:
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
