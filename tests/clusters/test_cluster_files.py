"""The cluster files validate with Ray's own launcher checks, open nothing but SSH, hold no secrets, and the
job runtime env stays under Ray's upload limit."""
import fnmatch
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTERS = REPO / "clusters"


def test_aws_yaml_passes_rays_schema_and_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTERS / "aws.yaml").read_text())
    validate_config(prepare_config(config))  # raises on any schema or node-type error
    types = config["available_node_types"]
    assert config["head_node_type"] in types and {"gpu_single", "gpu_multi"} <= set(types)
    assert all("IamInstanceProfile" in t["node_config"] for t in types.values())  # S3 without keys


def test_every_cluster_yaml_passes_rays_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    launcher_files = [p for p in CLUSTERS.glob("*.yaml") if p.name != "runtime_env.yaml"]
    assert {p.name for p in launcher_files} >= {"aws.yaml", "local.yaml"}
    for path in launcher_files:
        validate_config(prepare_config(yaml.safe_load(path.read_text())))


def _aws() -> dict:
    return yaml.safe_load((CLUSTERS / "aws.yaml").read_text())


def test_nodes_share_the_token_and_workers_reach_mlflow_directly_with_credentials():
    config = _aws()
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    setup = " ".join(config["setup_commands"])
    assert "RAY_AUTH_MODE=token" in setup and "MLFLOW_TRACKING_URI=http://${RAY_HEAD_IP:-127.0.0.1}:5000" in setup
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert ". ~/adaptnet/cluster.env && ray start" in " ".join(config[key])
    env_script = (CLUSTERS / "mlflow-env.sh").read_text()
    assert ". ~/adaptnet/clusters/mlflow-env.sh" in setup and "secretsmanager" in env_script
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):  # clients authenticate …
        assert f"export {var}=" in env_script
    server = " ".join(config["head_setup_commands"])  # … against the basic-auth app, admin from the same secret
    assert "--app-name basic-auth" in server and "MLFLOW_AUTH_CONFIG_PATH=~/adaptnet/clusters/mlflow-auth.ini" in server
    assert 'MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_TRACKING_PASSWORD"' in server
    assert "worker_setup_commands" not in config or not any("ssh" in c for c in config["worker_setup_commands"])


def test_no_private_key_on_any_worker_node_type():
    """Ray places its bootstrap key on the head itself; nothing we mount or run may put a private key (or an
    SSH client with host-key checks off) on the nodes, and file_mounts go to every node, workers included."""
    config = _aws()
    key_like = re.compile(r"(?i)(\.pem|id_rsa|id_ed25519|id_ecdsa|\.ssh/|private[_-]?key|\.key)$")
    mounts = {**config.get("file_mounts", {}), **{p: p for p in config.get("cluster_synced_files", [])}}
    assert not [m for pair in mounts.items() for m in pair if key_like.search(str(m))], mounts
    for name, node_type in config["available_node_types"].items():
        if name != config["head_node_type"]:
            assert not {"file_mounts", "worker_setup_commands"} & set(node_type), name
    worker_commands = " ".join(config.get("worker_setup_commands", []) + config["worker_start_ray_commands"]
                               + config["setup_commands"])
    for needle in ("ssh ", "StrictHostKeyChecking", ".pem", "-i ~/"):
        assert needle not in worker_commands, needle
    assert "BEGIN" not in (CLUSTERS / "aws.yaml").read_text()  # no key material inline


def test_tracking_store_is_postgresql_named_in_one_place():
    text = (CLUSTERS / "aws.yaml").read_text()
    assert text.count("ADAPTNET_MLFLOW_DB=") == 1  # the RDS instance, set once
    server = " ".join(_aws()["head_setup_commands"])
    assert '--backend-store-uri "$(adaptnet_tracking_store)"' in server and "sqlite" not in server
    assert "postgresql+psycopg2://" in (CLUSTERS / "mlflow-env.sh").read_text()  # the pinned driver
    assert "psycopg2-binary==" in (REPO / "requirements.txt").read_text()


def test_security_group_adds_no_ingress_beyond_ssh():
    config = _aws()
    extra = config["provider"]["security_group"]["IpPermissions"]
    assert all(rule.get("FromPort") == rule.get("ToPort") == 22 for rule in extra)
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    # MLflow listens beyond loopback for the workers; only the group's members reach port 5000 (no rule opens it)
    assert not any(rule.get("FromPort", 22) <= 5000 <= rule.get("ToPort", 22) for rule in extra)


def test_no_secrets_in_cluster_files():
    files = [p for p in CLUSTERS.iterdir() if p.suffix in (".yaml", ".sh", ".ini")]
    assert {"aws.yaml", "mlflow-env.sh", "mlflow-auth.ini"} <= {p.name for p in files}
    for path in files:
        text = path.read_text()
        assert not re.search(r"AKIA[0-9A-Z]{16}", text), path
        # a value may only be a reference ($VAR, "$(...)"), never a literal secret
        assert not re.search(r"(?i)(secret_access_key|aws_secret|password|RAY_AUTH_TOKEN)\w*\s*[:=]\s*[^\s\"$]", text), path


def _excluded(relative: str, patterns: list[str]) -> bool:
    parts = relative.split("/")
    return any(fnmatch.fnmatch(relative, p.rstrip("/")) or any(fnmatch.fnmatch(part, p.rstrip("/")) for part in parts)
               for p in patterns)


def test_runtime_env_upload_stays_under_rays_limit():
    env = yaml.safe_load((CLUSTERS / "runtime_env.yaml").read_text())
    size = sum(p.stat().st_size for p in REPO.rglob("*")
               if p.is_file() and not _excluded(str(p.relative_to(REPO)), env["excludes"]))
    assert size < 100 * 2 ** 20, f"{size / 2 ** 20:.1f} MiB"
    assert env["py_modules"] == ["platform/adaptnet"] and env["working_dir"] == "."
