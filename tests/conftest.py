import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from adaptnet.cluster.environ import scoped_environ

REPO = Path(__file__).resolve().parents[1]
CIFAR_MIRROR = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
# Start-up deadline of every server the tests start: generous, since a loaded 2-core machine is slow; a server
# whose process dies fails at once.
STARTUP_S = float(os.environ.get("ADAPTNET_TEST_STARTUP_S", "300"))
# Test trainings last seconds, and MLflow publishes system metrics only after a whole sampling interval (10 s by
# default). Set before any Ray cluster of the tests starts, so its worker processes inherit it.
os.environ.setdefault("ADAPTNET_SYSTEM_METRICS_INTERVAL_S", "2")
STARTED_GROUPS: list[tuple[str, int]] = []   # (what, process group id) of every server this session started
RAY_SESSIONS: list[str] = []                  # session dirs of the in-process Ray instances (ray_cluster)


def wait_until_up(proc: subprocess.Popen, probe, what: str, log: Path | None = None) -> None:
    """Calls `probe()` until it stops raising OSError, while `proc` lives, for at most STARTUP_S."""
    deadline = time.monotonic() + STARTUP_S
    while True:
        try:
            probe()
            return
        except OSError:
            if proc.poll() is not None:
                tail = log.read_text()[-2000:] if log and log.exists() else ""
                raise RuntimeError(f"{what} exited with {proc.returncode} during start-up {tail}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up in {STARTUP_S:.0f} s") from None
            time.sleep(0.3)


def http_get(url: str, timeout: float = 2.0, ca: Path | None = None) -> None:
    import ssl

    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    with urllib.request.urlopen(url, timeout=timeout, context=context):
        pass


def spawn(what: str, command: list[str], **kwargs) -> subprocess.Popen:
    """A server process in its own process group, recorded for the session-end check."""
    proc = subprocess.Popen(command, start_new_session=True, **kwargs)
    STARTED_GROUPS.append((what, proc.pid))
    return proc


def stop_group(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 60) -> None:
    """Stops a server by its process group: `sig`, then SIGKILL if it is not gone in time."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    _wait_group_gone(proc.pid, 30)


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return True
        time.sleep(0.2)
    return False


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if proc.name.isdigit() and fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(proc.name))
    return found


@pytest.fixture(scope="session", autouse=True)
def no_server_left_behind():
    """Session end: no server this test session started (MLflow, moto, PostgreSQL, Ray heads) still runs."""
    yield
    left = [(what, pgid, group_members(pgid)) for what, pgid in STARTED_GROUPS if not _wait_group_gone(pgid, 30)]
    left += [("ray", session, _processes_mentioning(session)) for session in RAY_SESSIONS if _processes_mentioning(session)]
    assert not left, f"servers left running: {left}"


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
    endpoint = f"http://127.0.0.1:{port}"
    proc = spawn("moto_server", [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}
    try:
        wait_until_up(proc, lambda: http_get(endpoint), "moto_server")
        with scoped_environ(env):
            yield endpoint
    finally:
        stop_group(proc)


class MlflowServer:
    """`mlflow server` on loopback over a backend store (default: sqlite in `root`), in its own process group."""

    def __init__(self, root: Path, artifacts: str, port: int, backend: str | None = None, extra_args=(),
                 extra_env=None, tls: Path | None = None):
        """`tls`: a folder with node.crt/node.key and ca.crt (adaptnet.cluster.tls): served over HTTPS."""
        self.port, self.tls = port, tls
        self.uri = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.root, self.artifacts = root, artifacts
        self.backend = backend or f"sqlite:///{root / 'mlflow.db'}"
        self.extra_args, self.extra_env = list(extra_args), dict(extra_env or {})
        self.proc = None

    def start(self):
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.extra_env}
        log = self.root / f"mlflow-server-{self.port}.log"
        tls = ["--uvicorn-opts", f"--ssl-certfile {self.tls / 'node.crt'} --ssl-keyfile {self.tls / 'node.key'}"] \
            if self.tls else []
        with open(log, "a") as out:
            self.proc = spawn("mlflow server", [
                str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", "1", "--backend-store-uri", self.backend, "--artifacts-destination", self.artifacts,
                *tls, *self.extra_args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=self.root)
        ca = self.tls / "ca.crt" if self.tls else None
        try:
            wait_until_up(self.proc, lambda: http_get(f"{self.uri}/health", ca=ca), "mlflow server", log)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        if self.proc is not None:
            stop_group(self.proc, timeout=30)  # the server runs in its own process group (uvicorn workers)


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
        self.proc = spawn("ray head", [
            str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", f"--port={port}",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
            f"--num-cpus={num_cpus}", "--disable-usage-stats", *extra_args],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_until_up(self.proc, lambda: self.get("/api/version"), "ray start --head", tmp / "ray-head.log")
        except BaseException:
            self.stop()
            raise

    def wait_for_job_agent(self) -> None:
        """A fresh head answers job submissions only once its job agent has registered: submit a no-op job
        until it is accepted (the head alive, at most STARTUP_S)."""
        import json

        def probe():
            request = urllib.request.Request(
                f"{self.dashboard}/api/jobs/", data=json.dumps({"entrypoint": "true"}).encode(), method="POST",
                headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}", "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30):
                    pass
            except urllib.error.HTTPError as err:  # 500 "No available agent" until the agent is there
                raise OSError(err.read()[:200]) from None

        wait_until_up(self.proc, probe, "the Ray head's job agent")

    def get(self, path: str) -> dict:
        """GET from the dashboard's HTTP API with the cluster's token."""
        import json

        request = urllib.request.Request(f"{self.dashboard}{path}",
                                         headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.loads(answer.read())

    def stop(self):
        # SIGTERM reaches every Ray process of the group at once; `ray start --block` itself then waits out its
        # own 60 s+ grace, so what is still there after a few seconds is killed
        stop_group(self.proc, timeout=5)
        self.log.close()


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory, port_factory):
    head = RayHead(tmp_path_factory.mktemp("ray-head"), port_factory(), port_factory())
    try:
        yield head
    finally:
        head.stop()


@pytest.fixture(scope="module")
def ray_cluster(moto_server):
    """A private local Ray instance per test module (never one that happens to run on this machine, and no
    actor or placement group left by one module's drills in the next); started after the S3 endpoint
    variables are set so that its workers inherit them."""
    import ray

    from adaptnet.cluster.run.runtime import runtime_env

    raylet = None
    try:
        ray.init(address="local", num_cpus=4, include_dashboard=True, runtime_env=runtime_env())
        node = ray._private.worker._global_node
        session = node.get_session_dir_path()
        RAY_SESSIONS.append(session)
        raylet = node.all_processes[ray._private.ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
        yield ray
    finally:
        ray.shutdown()
        if raylet is not None:
            _stop_workers_of(raylet)
    deadline = time.monotonic() + 60  # ray.shutdown stops its processes; make sure none outlives the module
    while time.monotonic() < deadline and _processes_mentioning(session):
        time.sleep(0.5)
    assert not _processes_mentioning(session), f"Ray processes left: {_processes_mentioning(session)}"


def _stop_workers_of(raylet: int, grace_s: float = 10) -> None:
    """Our raylet's worker processes (they carry RAY_RAYLET_PID), once it is gone: each should exit with it, but
    one can miss that (seen: a Train controller, 800 MB, idle for good after its module); what is left after
    `grace_s` is killed."""
    def workers() -> list[int]:
        return _processes_whose("environ", f"\0RAY_RAYLET_PID={raylet}\0")

    deadline = time.monotonic() + grace_s
    while workers() and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in workers():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _processes_mentioning(text: str) -> list[int]:
    return _processes_whose("cmdline", text)


def _processes_whose(part: str, text: str) -> list[int]:
    """Live processes whose /proc/<pid>/<part> (cmdline, environ: NUL-separated) contains `text`; a leading NUL
    in `text` also matches at the start."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text.encode() in b"\0" + (proc / part).read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.fixture
def mlflow_server(request, tmp_path, moto_server, port_factory):
    """`mlflow server` (artifacts on S3) over sqlite, or over PostgreSQL when parametrized with
    `indirect=True` and "postgresql"."""
    if getattr(request, "param", "sqlite") == "postgresql":
        yield request.getfixturevalue("pg_mlflow_server")
        return
    import boto3

    boto3.client("s3").create_bucket(Bucket="mlflow-artifacts")
    server = MlflowServer(tmp_path, "s3://mlflow-artifacts/", port_factory())
    try:
        yield server.start()
    finally:
        server.stop()


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1: `initdb` into a fresh folder and `postgres` on a free port,
    as the unprivileged `postgres` user when the tests run as root (PostgreSQL refuses root)."""

    def __init__(self, port: int):
        import glob
        import pwd
        import shutil
        import tempfile

        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
        self.bin = Path(binaries[-1]) if binaries else Path(shutil.which("initdb") or "initdb").parent
        if not (self.bin / "initdb").exists():
            raise RuntimeError("PostgreSQL is not installed (apt-get install -y postgresql; `make test` does it)")
        self.port = port
        self.user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self.dir = Path(tempfile.mkdtemp(prefix="adaptnet-pg-"))  # not under pytest's root-only tmp dirs
        if self.user:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self.proc = None

    def _as_owner(self) -> dict:
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []} if self.user else {}

    def start(self):
        data = self.dir / "data"
        subprocess.run([str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True, cwd=self.dir, **self._as_owner())
        log = self.dir / "postgres.log"
        with open(log, "w") as out:
            if self.user:
                os.chown(log, self.user.pw_uid, self.user.pw_gid)
            self.proc = spawn("postgres", [str(self.bin / "postgres"), "-D", str(data), "-k", str(self.dir),
                                           "-h", "127.0.0.1", "-p", str(self.port), "-c", "fsync=off"],
                              stdout=out, stderr=subprocess.STDOUT, cwd=self.dir, **self._as_owner())
        wait_until_up(self.proc, self._ready, "postgres", log)
        return self

    def _ready(self) -> None:
        done = subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"])
        if done.returncode != 0:
            raise OSError(f"pg_isready: {done.returncode}")

    def uri(self, database: str = "postgres") -> str:
        """The store URI for MLflow (SQLAlchemy's psycopg2 dialect: `postgresql://` alone means psycopg 3)."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg2

        connection = psycopg2.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres")
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.uri(name)

    def stop(self):
        import shutil

        if self.proc is not None:
            stop_group(self.proc, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    server = PostgresServer(free_port())
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def pg_mlflow_server(tmp_path, postgres_server, moto_server, port_factory):
    """`mlflow server` whose backend store is a fresh database on the real PostgreSQL; artifacts on S3."""
    import uuid

    import boto3

    boto3.client("s3").create_bucket(Bucket="mlflow-artifacts")
    store = postgres_server.create_database(f"mlflow_{uuid.uuid4().hex[:8]}")
    server = MlflowServer(tmp_path, "s3://mlflow-artifacts/", port_factory(), backend=store)
    try:
        yield server.start()
    finally:
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


def assert_markdown_tables(text: str) -> int:
    """Every Markdown table in `text` has one cell count for its header, separator and rows (pipes inside a
    cell escaped); returns how many tables there were."""
    import re

    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.strip().startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    for table in tables:
        counts = [len(re.split(r"(?<!\\)\|", line.strip())) - 2 for line in table]
        assert len(table) >= 2 and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", table[1].strip()), table[:2]
        assert len(set(counts)) == 1, f"cell counts {counts}: {table[0]}"
    return len(tables)


def assert_evaluation_equals_one_process(metrics: dict, run_dir: Path) -> None:
    """The held-out and test metrics a multi-worker run reported for its last epoch (each rank evaluated its
    shard with rank 0's weights and statistics, the sums all-reduced) equal one process evaluating the whole
    splits with the last checkpoint."""
    from adaptnet.loop.evaluate import load_checkpoint_model
    from adaptnet.loop.trainer import checkpoint_path, evaluate

    _, data, model = load_checkpoint_model(checkpoint_path(run_dir), "cpu")
    for split in ("holdout", "test"):
        whole = evaluate(model, getattr(data, split))
        assert whole
        for key, value in whole.items():  # counts exactly; loss sums added in another order
            assert metrics[f"{split}/{key}"] == pytest.approx(value, rel=1e-6 if key.startswith("loss_") else 0,
                                                              abs=1e-9), key
