"""What every Ray worker sets up first: MLflow's INFO lines in the worker's log file, its warnings on the
terminal, with or without MLflow configuring its own logger on import; no traceback when Ray stops it."""
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


STOPPED = """
import sys
from adaptnet.cluster.run import runtime

class Collected:  # as Ray's SIGTERM handler raising SystemExit inside a garbage collector's callback
    def __del__(self):
        raise SystemExit(1)

class Broken:
    def __del__(self):
        raise ValueError("a real error in a callback")

if sys.argv[1] == "hooked":
    runtime.quiet_stop()
Collected()
Broken()
"""


@pytest.mark.parametrize("hooked", [True, False], ids=["hooked", "plain"])
def test_a_stopped_worker_prints_no_system_exit_and_every_other_error(hooked):
    done = subprocess.run([sys.executable, "-c", STOPPED, "hooked" if hooked else "plain"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ValueError: a real error in a callback" in done.stderr
    assert ("SystemExit" in done.stderr) is not hooked  # without the hook Python prints it
