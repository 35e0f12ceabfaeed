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
    profiles = {name: t["node_config"]["IamInstanceProfile"]["Name"] for name, t in types.items()}
    head = profiles.pop(config["head_node_type"])
    assert head == "adaptnet-ray-head" and set(profiles.values()) == {"adaptnet-ray-worker"}  # two profiles


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
    assert "RAY_AUTH_MODE=token" in setup and "MLFLOW_TRACKING_URI=https://${RAY_HEAD_IP:-127.0.0.1}:5000" in setup
    assert "RAY_USE_TLS=1" in setup and "RAY_TLS_CA_CERT=$HOME/.adaptnet/tls/ca.crt" in setup  # Ray's mutual TLS
    assert "MLFLOW_TRACKING_SERVER_CERT_PATH=$HOME/.adaptnet/tls/ca.crt" in setup  # clients verify MLflow's CA
    assert "python -m adaptnet.cluster.tls node" in setup
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert ". ~/adaptnet/cluster.env && ray start" in " ".join(config[key])
    env_script = (CLUSTERS / "mlflow-env.sh").read_text()
    assert ". ~/adaptnet/clusters/mlflow-env.sh" in setup and "secretsmanager" in env_script
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):  # every Ray process: the trial user …
        assert f'export {var}="$(adaptnet_secret "$ADAPTNET_TRIAL_SECRET"' in env_script
    assert '"$ADAPTNET_SECRET"' not in env_script.split("adaptnet_tracking_store()")[0].split("adaptnet_secret()")[1]
    server = " ".join(config["head_setup_commands"])  # … the admin's pair only in the server's environment
    assert "--app-name basic-auth" in server and "MLFLOW_AUTH_CONFIG_PATH=~/adaptnet/clusters/mlflow-auth.ini" in server
    assert 'MLFLOW_AUTH_ADMIN_PASSWORD="$(adaptnet_secret "$ADAPTNET_SECRET" password)"' in server
    assert "python -m adaptnet.cluster.tracking.users https://127.0.0.1:5000 adaptnet-sweeps adaptnet" in server
    assert "--ssl-certfile $HOME/.adaptnet/tls/node.crt" in server  # MLflow over HTTPS
    assert "worker_setup_commands" not in config or not any("ssh" in c for c in config["worker_setup_commands"])


def test_no_private_key_on_any_worker_node_type():
    """Ray places its bootstrap key on the head itself; nothing we mount or run may put a private key (or an
    SSH client with host-key checks off) on the nodes, and file_mounts go to every node, workers included."""
    config = _aws()
    key_like = re.compile(r"(?i)(\.pem|id_rsa|id_ed25519|id_ecdsa|\.ssh/|private[_-]?key|\.key)$")
    mounts = {**config.get("file_mounts", {}), **{p: p for p in config.get("cluster_synced_files", [])}}
    # the one key shipped: the TLS CA's, with which each node signs its certificate and which it then deletes
    ca_key = "~/.adaptnet/tls/ca.key"
    assert not [m for pair in mounts.items() for m in pair if key_like.search(str(m)) and m != ca_key], mounts
    setup = config["setup_commands"]
    signing = next(i for i, c in enumerate(setup) if "adaptnet.cluster.tls node" in c)
    assert "rm -f ~/.adaptnet/tls/ca.key" in setup[signing] and not any(ca_key in c for c in setup[signing + 1:])
    for name, node_type in config["available_node_types"].items():
        if name != config["head_node_type"]:
            assert not {"file_mounts", "worker_setup_commands"} & set(node_type), name
    worker_commands = " ".join(config.get("worker_setup_commands", []) + config["worker_start_ray_commands"]
                               + config["setup_commands"])
    for needle in ("ssh ", "StrictHostKeyChecking", ".pem", "-i ~/"):
        assert needle not in worker_commands, needle
    assert "BEGIN" not in (CLUSTERS / "aws.yaml").read_text()  # no key material inline


def test_tracking_store_is_postgresql_named_in_one_place_over_verified_tls_with_no_password_on_a_command_line():
    text = (CLUSTERS / "aws.yaml").read_text()
    assert text.count("ADAPTNET_MLFLOW_DB=") == 1  # the RDS instance, set once
    server = " ".join(_aws()["head_setup_commands"])
    assert '--backend-store-uri "$(adaptnet_tracking_store)"' in server and "sqlite" not in server
    env_script = (CLUSTERS / "mlflow-env.sh").read_text()
    store = env_script.split("adaptnet_tracking_store() {")[1].split("}")[0]
    assert "postgresql+psycopg2://mlflow@%s:5432/mlflow?sslmode=verify-full&sslrootcert=" in store  # no password
    assert "db_password" not in store and "rds-ca.pem" in store and "global-bundle.pem" in server
    assert 'PGPASSWORD="$(adaptnet_secret "$ADAPTNET_SECRET" db_password)"' in server  # the environment, not argv
    argv = server.split("nohup mlflow server", 1)[1].split(">", 1)[0]  # what `ps` shows of the server
    assert not re.search(r"(?i)password|\$\(adaptnet_secret", argv), argv  # the store's URI holds none (above)
    assert "psycopg2-binary==" in (REPO / "requirements.txt").read_text()


def test_security_group_adds_no_ingress_beyond_ssh_from_the_admin_range():
    config = _aws()
    extra = config["provider"]["security_group"]["IpPermissions"]
    assert all(rule.get("FromPort") == rule.get("ToPort") == 22 for rule in extra)
    ranges = [r["CidrIp"] for rule in extra for r in rule.get("IpRanges", [])]
    assert len(ranges) == 1 and ranges[0] != "0.0.0.0/0" and not any(rule.get("Ipv6Ranges") for rule in extra)
    assert (CLUSTERS / "aws.yaml").read_text().count("ADAPTNET_ADMIN_CIDR") >= 1
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


def _statements(name: str) -> list[dict]:
    import json

    return json.loads((CLUSTERS / "iam" / name).read_text())["Statement"]


def _resources(statement: dict) -> list[str]:
    found = statement["Resource"]
    return [found] if isinstance(found, str) else found


def test_worker_policy_names_only_the_bucket_and_the_trial_secret_and_the_head_passes_only_the_worker_role():
    worker = _statements("worker-policy.json")
    actions = {a for s in worker for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert {a.split(":")[0] for a in actions} == {"s3", "secretsmanager"} and "secretsmanager:GetSecretValue" in actions
    for statement in worker:
        for resource in _resources(statement):
            assert resource.startswith(("arn:aws:s3:::ADAPTNET_BUCKET", "arn:aws:secretsmanager:*:*:secret:"
                                        "ADAPTNET_TRIAL_SECRET-")), resource
    assert not any(r.endswith(("mlflow/*", "ADAPTNET_SECRET-*")) for s in worker for r in _resources(s))
    head = _statements("head-policy.json")
    (passing,) = [s for s in head if s["Action"] == "iam:PassRole"]
    assert _resources(passing) == ["arn:aws:iam::*:role/adaptnet-ray-worker"]
    assert not any(s["Action"] in ("*", "iam:*", "s3:*") for s in head)


def test_aws_setup_makes_the_group_profiles_and_trial_secret_on_a_real_aws_api(moto_server, tmp_path):
    """clusters/aws_setup.py against moto_server: the group opens SSH to the configured range alone (a world
    rule Ray made earlier is revoked), both profiles hold their rendered policies, the trial secret exists."""
    import json
    import os
    import subprocess
    import sys

    import boto3

    config = _aws()
    cidr = config["provider"]["security_group"]["IpPermissions"][0]["IpRanges"][0]["CidrIp"]
    ec2 = boto3.client("ec2", region_name="us-east-1")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    group = ec2.create_security_group(GroupName="adaptnet-ray", Description="made by ray up", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[  # Ray's default rule
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    dry = subprocess.run([sys.executable, str(CLUSTERS / "aws_setup.py"), "--dry-run", "--tls-dir", str(tmp_path / "tls")],
                         env=os.environ, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0 and f"SSH from {cidr}" in dry.stdout and "adaptnet-ray-worker" in dry.stdout
    assert not boto3.client("iam", region_name="us-east-1").list_instance_profiles()["InstanceProfiles"]  # nothing made
    assert not (tmp_path / "tls").exists()
    for _ in range(2):  # idempotent
        done = subprocess.run([sys.executable, str(CLUSTERS / "aws_setup.py"), "--tls-dir", str(tmp_path / "tls")],
                              env=os.environ, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    rules = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
    ranges = sorted(r["CidrIp"] for rule in rules for r in rule.get("IpRanges", []))
    assert ranges == [cidr]
    assert [p["GroupId"] for rule in rules for p in rule.get("UserIdGroupPairs", [])] == [group]
    iam = boto3.client("iam", region_name="us-east-1")
    for profile in ("adaptnet-ray-head", "adaptnet-ray-worker"):
        roles = iam.get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"]
        assert [r["RoleName"] for r in roles] == [profile]
    worker = iam.get_role_policy(RoleName="adaptnet-ray-worker", PolicyName="adaptnet-ray-worker")["PolicyDocument"]
    text = json.dumps(worker)
    assert "arn:aws:s3:::adaptnet-bucket/ray/*" in text and "ADAPTNET_" not in text and "mlflow-admin" not in text
    secret = boto3.client("secretsmanager", region_name="us-east-1").get_secret_value(SecretId="adaptnet/mlflow-trial")
    assert set(json.loads(secret["SecretString"])) == {"username", "password"}
    assert (tmp_path / "tls" / "ca.crt").exists() and oct((tmp_path / "tls" / "ca.key").stat().st_mode)[-3:] == "600"
