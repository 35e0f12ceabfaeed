"""The cluster's tracking server as clusters/aws.yaml runs it: MLflow's basic-auth app with the shipped
clusters/mlflow-auth.ini, the admin from the environment, over a real PostgreSQL store. Unauthenticated and
wrongly authenticated requests are refused; a client with MLFLOW_TRACKING_USERNAME/PASSWORD logs runs."""
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
from adaptnet.cluster.tracking.store import find_or_create_run

REPO = Path(__file__).resolve().parents[2]


def _status(url: str, auth: tuple[str, str] | None) -> int:
    request = urllib.request.Request(url, data=json.dumps({"max_results": 1}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code


def test_every_tracking_request_is_authenticated(tmp_path, postgres_server, port_factory, monkeypatch):
    password = secrets.token_hex(12)
    store = postgres_server.create_database(f"auth_{uuid.uuid4().hex[:8]}")
    server = MlflowServer(tmp_path, str(tmp_path / "artifacts"), port_factory(), backend=store,
                          extra_args=["--app-name", "basic-auth"],
                          extra_env={"MLFLOW_AUTH_CONFIG_PATH": str(REPO / "clusters" / "mlflow-auth.ini"),
                                     "MLFLOW_AUTH_ADMIN_USERNAME": "admin", "MLFLOW_AUTH_ADMIN_PASSWORD": password,
                                     "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)})  # CSRF key
    try:
        server.start()
        search = f"{server.uri}/api/2.0/mlflow/experiments/search"
        assert _status(search, None) == 401
        assert _status(search, ("admin", "wrong")) == 401
        assert _status(search, ("admin", password)) == 200
        check_tracking_uri(server.uri)  # the pre-flight health check needs no credentials
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        run_id = find_or_create_run(server.uri, "auth", run_key="k", run_name="r", params={"a": "1"})
        assert find_or_create_run(server.uri, "auth", run_key="k", run_name="r", params={"a": "1"}) == run_id
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        with pytest.raises(Exception, match="(?i)unauthori|401|credentials"):
            find_or_create_run(server.uri, "auth", run_key="k2", run_name="r2", params={})
    finally:
        server.stop()
