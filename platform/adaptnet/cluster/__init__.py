"""The one subpackage that imports ray and mlflow: Ray Train runs, MLflow tracking, cluster storage."""
