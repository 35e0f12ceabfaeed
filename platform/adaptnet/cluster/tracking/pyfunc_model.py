"""The code of every adaptnet MLflow model (models from code: MLflow runs this file to load the model, so no
pickled Python object is stored). The model's `code/` folder ships the adaptnet package it imports."""
from mlflow.models import set_model

from adaptnet.cluster.tracking.export import AdaptivePyfunc

set_model(AdaptivePyfunc())
