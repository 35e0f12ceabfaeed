"""Ray with TLS as clusters/aws.yaml runs it: mutual TLS on every gRPC channel (certificates signed by the
cluster's CA, adaptnet.cluster.tls) on top of token authentication."""
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import RayHead

from adaptnet.cluster.tls import make_ca, make_node_cert, ray_tls_env
from adaptnet.cluster.tracking.store import client

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.name=msdnet_cifar_budgeted", "data.train_subset=128", "data.holdout=32", "data.test_subset=32",
        "train.batch_size=32", "train.epochs=1"]


def _handshake(port: int, ca: Path, pair: tuple[Path, Path] | None) -> str:
    """A TLS client at the head's GCS port, with or without a client certificate: what the server does."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    if pair:
        context.load_cert_chain(*map(str, pair))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as channel:
            channel.settimeout(3)
            try:
                return "closed" if channel.recv(1) == b"" else "answered"  # gRPC's HTTP/2 settings frame
            except ssl.SSLError as err:
                return f"refused ({err.reason})"


def test_two_worker_training_through_a_ray_head_with_tls_and_a_client_without_a_certificate_is_refused(
        tmp_path, cifar10_spec, port_factory):
    from ray._private.services import get_node_ip_address

    tls = tmp_path / "tls"
    make_ca(tls)
    pair = make_node_cert(tls, [get_node_ip_address()])  # Ray's channels use the node's address
    port = port_factory()
    head = RayHead(tmp_path, port, port_factory(), num_cpus=4, extra_env=ray_tls_env(tls))
    try:
        assert _handshake(port, tls / "ca.crt", pair) == "answered"
        refused = _handshake(port, tls / "ca.crt", None)
        print("without a client certificate:", refused)
        assert refused.startswith(("refused", "closed"))
        tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
        done = subprocess.run(
            [sys.executable, "-m", "adaptnet.cli", "train", "cifar10-smoke", f"data.dataset={cifar10_spec}",
             f"output_dir={tmp_path / 'runs'}", "name=tls-smoke", *TINY, "--workers", "2", "--address", head.address,
             "--tracking-uri", tracking, "--storage", str(tmp_path / "ray_results")],
            cwd=tmp_path, env={**head.env, "PYTHONPATH": str(REPO / "platform")}, capture_output=True, text=True,
            timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        experiment = client(tracking).get_experiment_by_name("adaptnet")
        (run,) = client(tracking).search_runs([experiment.experiment_id])
        assert run.info.status == "FINISHED" and run.data.params["cluster.workers"] == "2"
        assert "test/top1_exit1" in run.data.metrics
    finally:
        head.stop()
