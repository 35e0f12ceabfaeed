"""A real local Ray cluster and a real MLflow server (sqlite backend) for the cluster tests."""
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest



@pytest.fixture(scope="session")
def ray_cluster(moto_server):
    """A private local Ray instance (never one that happens to run on this machine); started after the
    S3 endpoint variables are set so that its workers inherit them."""
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=True,
             runtime_env={"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}})
    yield ray
    ray.shutdown()


class MlflowServer:
    def __init__(self, root: Path, artifacts: str, port: int):
        self.port = port
        self.uri = f"http://127.0.0.1:{self.port}"
        self.root, self.artifacts = root, artifacts
        self.proc = None

    def start(self):
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", self.artifacts],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1):
                    return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("mlflow server did not start")

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)  # the server runs in its own process group (uvicorn workers)
        self.proc.wait(timeout=30)


@pytest.fixture
def mlflow_server(tmp_path, moto_server, port_factory):
    import boto3

    boto3.client("s3").create_bucket(Bucket="mlflow-artifacts")
    server = MlflowServer(tmp_path, "s3://mlflow-artifacts/", port_factory()).start()
    yield server
    if server.proc.poll() is None:
        server.stop()
