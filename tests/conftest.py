import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CIFAR_MIRROR = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.fixture(scope="session")
def cifar10_spec() -> str:
    """The real CIFAR-10: the Makefile's choice, else the offline JPEG mirror, else torchvision's download."""
    spec = os.environ.get("ADAPTNET_DATASET") or (str(CIFAR_MIRROR) if CIFAR_MIRROR.exists() else "cifar10")
    return str(Path(spec).resolve()) if Path(spec).exists() else spec  # Ray workers start in other directories


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def port_factory():
    return free_port


@pytest.fixture(scope="session")
def moto_server():
    """A real S3 protocol server (moto) on loopback; yields its endpoint URL and sets the AWS env vars."""
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("moto_server did not start")
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield endpoint
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.terminate()
    proc.wait(timeout=10)


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


class RayHead:
    """`ray start --head --block` (dashboard on 127.0.0.1) with token authentication, in its own process group: the
    cluster a submitted job or a separate driver process joins. Stopped by that group's pid, never `ray stop`."""

    def __init__(self, tmp: Path, port: int, dashboard_port: int, num_cpus: int = 4, extra_args=(), extra_env=None):
        import secrets

        self.address = f"127.0.0.1:{port}"
        self.dashboard = f"http://127.0.0.1:{dashboard_port}"
        # jobs run `python` from the PATH `ray start` had: the project's environment first
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = {**os.environ, "PATH": path, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
                    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", **(extra_env or {})}
        self.log = open(tmp / "ray-head.log", "w")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", f"--port={port}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
             f"--num-cpus={num_cpus}", "--disable-usage-stats", *extra_args],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                self.get("/api/version")
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"ray start exited: {(tmp / 'ray-head.log').read_text()[-2000:]}")
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("the Ray head did not come up")

    def get(self, path: str) -> dict:
        """GET from the dashboard's HTTP API with the cluster's token."""
        import json

        request = urllib.request.Request(f"{self.dashboard}{path}",
                                         headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.loads(answer.read())

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # --block: ray start tears its processes down on SIGTERM
            self.proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory, port_factory):
    head = RayHead(tmp_path_factory.mktemp("ray-head"), port_factory(), port_factory())
    yield head
    head.stop()


@pytest.fixture(scope="module")
def ray_cluster(moto_server):
    """A private local Ray instance per test module (never one that happens to run on this machine, and no
    actor or placement group left by one module's drills in the next); started after the S3 endpoint
    variables are set so that its workers inherit them."""
    import ray

    from adaptnet.cluster.ray_runtime import runtime_env

    ray.init(address="local", num_cpus=4, include_dashboard=True, runtime_env=runtime_env())
    yield ray
    ray.shutdown()


@pytest.fixture
def mlflow_server(tmp_path, moto_server, port_factory):
    import boto3

    boto3.client("s3").create_bucket(Bucket="mlflow-artifacts")
    server = MlflowServer(tmp_path, "s3://mlflow-artifacts/", port_factory()).start()
    yield server
    if server.proc.poll() is None:
        server.stop()


IMAGENET_SAMPLE = REPO.parent / "shared" / "data" / "imagenet-sample-1000.tar"


@pytest.fixture(scope="session")
def imagenet_tree(tmp_path_factory) -> Path:
    """An ImageFolder of the 1,000 real ImageNet JPEGs (one per class, mixed sizes, some greyscale): the same
    files (symlinks) as train/<wnid>/ and val/<wnid>/."""
    import tarfile

    if not IMAGENET_SAMPLE.exists():
        pytest.skip("the ImageNet sample is not next to the checkout (../shared/data)")
    root = tmp_path_factory.mktemp("imagenet")
    with tarfile.open(IMAGENET_SAMPLE) as tar:
        tar.extractall(root / "raw", filter="data")
    tree = root / "tree"
    for image in sorted((root / "raw").rglob("*.JPEG")):
        wnid = image.name.split("_", 1)[0]
        for split in ("train", "val"):
            (tree / split / wnid).mkdir(parents=True, exist_ok=True)
            (tree / split / wnid / image.name).symlink_to(image)
    return tree
