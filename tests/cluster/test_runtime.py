"""What every Ray worker sets up first: MLflow's INFO lines in the worker's log file, its warnings on the
terminal, with or without MLflow configuring its own logger on import."""
import os
import subprocess
import sys

import pytest

SCRIPT = """
import logging, sys
from adaptnet.cluster.run.runtime import quiet_mlflow_logging
quiet_mlflow_logging()
print("mlflow imported by the hook:", "mlflow" in sys.modules)
import mlflow
logging.getLogger("mlflow.tracking").info("an INFO line")
logging.getLogger("mlflow.tracking").warning("a WARNING line")
"""


@pytest.mark.parametrize("configure", ["false", None], ids=["ray-workers", "mlflow-configures"])
def test_mlflow_info_lines_go_to_the_worker_log_and_warnings_to_the_terminal(tmp_path, configure):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_CONFIGURE_LOGGING", "MLFLOW_LOGGING_LEVEL")}
    env["TMPDIR"] = str(tmp_path)  # outside Ray the log file goes to the temporary folder
    if configure:
        env["MLFLOW_CONFIGURE_LOGGING"] = configure
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"mlflow imported by the hook: {configure != 'false'}" in done.stdout  # Ray's workers skip the import
    assert "a WARNING line" in done.stderr and "an INFO line" not in done.stderr + done.stdout
    (log,) = tmp_path.glob("adaptnet-worker-*.log")
    text = log.read_text()
    assert "INFO mlflow.tracking: an INFO line" in text and "WARNING mlflow.tracking: a WARNING line" in text
