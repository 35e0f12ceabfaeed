"""MLflow, through explicit run ids: the run store (`store`), per-epoch logging (`epochs`), sweep run tags
(`runs`), a trial's final results (`results`), run artifacts, LoggedModels and the registry (`models`), the
pyfunc export, views of a sweep, and system metrics. Imports nothing from `run` or `sweep`."""
