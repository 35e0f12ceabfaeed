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


def test_nodes_share_the_token_and_workers_reach_mlflow_through_a_tunnel():
    config = yaml.safe_load((CLUSTERS / "aws.yaml").read_text())
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    setup = " ".join(config["setup_commands"])
    assert "RAY_AUTH_MODE=token" in setup and "MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in setup
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert ". ~/adaptnet/cluster.env && ray start" in " ".join(config[key])
    assert "-L 5000:127.0.0.1:5000" in " ".join(config["worker_setup_commands"])


def test_security_group_adds_no_ingress_beyond_ssh():
    config = yaml.safe_load((CLUSTERS / "aws.yaml").read_text())
    extra = config["provider"]["security_group"]["IpPermissions"]
    assert all(rule.get("FromPort") == rule.get("ToPort") == 22 for rule in extra)
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    assert "--host 127.0.0.1" in " ".join(config["head_setup_commands"])


def test_no_secrets_in_cluster_files():
    for path in CLUSTERS.glob("*.yaml"):
        text = path.read_text()
        assert not re.search(r"AKIA[0-9A-Z]{16}", text), path
        assert not re.search(r"(?i)(secret_access_key|aws_secret|password|RAY_AUTH_TOKEN)\s*[:=]\s*\S", text), path


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
