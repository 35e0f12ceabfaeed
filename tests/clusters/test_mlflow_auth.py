"""The cluster's tracking server as clusters/aws.yaml runs it: MLflow's basic-auth app with the shipped
clusters/mlflow-auth.ini over HTTPS, the admin from the environment, over a real PostgreSQL store, and the
trial user every Ray process logs as."""
import base64
import json
import secrets
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import MlflowServer

from adaptnet.cluster.preflight import check_tracking_uri
from adaptnet.cluster.tracking.store import client, find_or_create_run

REPO = Path(__file__).resolve().parents[2]


def _https_status(url: str, auth: tuple[str, str] | None, ca: Path, method: str = "POST", body: dict | None = None) -> int:
    import ssl

    request = urllib.request.Request(url, data=json.dumps(body or {}).encode() if method == "POST" else None,
                                     method=method, headers={"Content-Type": "application/json"})
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30, context=ssl.create_default_context(cafile=str(ca))) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code


def test_trials_log_over_https_as_a_user_who_may_edit_only_the_sweep_experiments(tmp_path, postgres_server,
                                                                                 port_factory, monkeypatch):
    """The head's server as aws.yaml runs it: HTTPS with a certificate signed by the cluster's CA, the basic-auth
    app with the admin from the environment, a real PostgreSQL store. Unauthenticated and wrongly authenticated
    requests are refused; the head's setup makes the trial user (EDIT on the sweep experiments); a trial logs a
    run through it as that user, verifying the CA; it may not delete another experiment (403), and a client that
    does not trust the CA is refused."""
    import ssl

    from adaptnet.cluster.tls import make_ca, make_node_cert
    from adaptnet.cluster.tracking.users import provision

    tls = tmp_path / "tls"
    make_ca(tls)
    make_node_cert(tls, ["127.0.0.1"])
    admin, trial = ("admin", secrets.token_hex(12)), ("trials", secrets.token_hex(12))
    store = postgres_server.create_database(f"auth_{uuid.uuid4().hex[:8]}")
    server = MlflowServer(tmp_path, str(tmp_path / "artifacts"), port_factory(), backend=store, tls=tls,
                          extra_args=["--app-name", "basic-auth"],
                          extra_env={"MLFLOW_AUTH_CONFIG_PATH": str(REPO / "clusters" / "mlflow-auth.ini"),
                                     "MLFLOW_AUTH_ADMIN_USERNAME": admin[0], "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
                                     "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)})
    try:
        server.start()
        assert server.uri.startswith("https://")
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # the CA is not trusted
            urllib.request.urlopen(f"{server.uri}/health", timeout=30, context=ssl.create_default_context())
        monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(tls / "ca.crt"))
        check_tracking_uri(server.uri)  # the pre-flight check needs no credentials, and verifies the CA too
        search = f"{server.uri}/api/2.0/mlflow/experiments/search"
        assert _https_status(search, None, tls / "ca.crt", body={"max_results": 1}) == 401
        assert _https_status(search, (admin[0], "wrong"), tls / "ca.crt", body={"max_results": 1}) == 401
        assert _https_status(search, admin, tls / "ca.crt", body={"max_results": 1}) == 200
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])
        ids = provision(server.uri, trial[0], "first-password", ["adaptnet-sweeps"])
        assert provision(server.uri, *trial, ["adaptnet-sweeps"]) == ids  # a new head sets it up again
        other = client(server.uri).create_experiment("someone-else")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", trial[0])  # a trial's process: the trial user only
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", trial[1])
        run_id = find_or_create_run(server.uri, "adaptnet-sweeps", run_key="k", run_name="baseline-s0",
                                    params={"arm": "baseline"})
        assert find_or_create_run(server.uri, "adaptnet-sweeps", run_key="k", run_name="baseline-s0",
                                  params={"arm": "baseline"}) == run_id
        tracker = client(server.uri)
        tracker.log_metric(run_id, "final/test_top1_exit1", 41.5)
        tracker.log_text(run_id, "a table", "comparison.md")  # artifacts through the server, over HTTPS
        assert tracker.get_run(run_id).data.metrics["final/test_top1_exit1"] == 41.5
        assert tracker.get_run(run_id).info.experiment_id == ids["adaptnet-sweeps"]
        api = f"{server.uri}/api/2.0/mlflow/experiments"
        assert _https_status(f"{api}/delete", trial, tls / "ca.crt", body={"experiment_id": other}) == 403
        assert _https_status(f"{api}/delete", trial, tls / "ca.crt", body={"experiment_id": ids["adaptnet-sweeps"]}) == 403
        assert _https_status(f"{api}/get?experiment_id={other}", trial, tls / "ca.crt", method="GET") == 403
        assert _https_status(f"{api}/get?experiment_id={other}", admin, tls / "ca.crt", method="GET") == 200
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        with pytest.raises(Exception, match="(?i)unauthori|401|credentials"):
            find_or_create_run(server.uri, "adaptnet-sweeps", run_key="k2", run_name="r2", params={})
    finally:
        server.stop()
