"""One-time AWS setup for clusters/aws.yaml, from the values set there (bucket, secrets, tracking store,
ADAPTNET_ADMIN_CIDR): the security group (SSH from that range only, all traffic among its members; made before
`ray up` so that Ray adds no rule of its own), the head's and the workers' roles and instance profiles
(clusters/iam/*.json with the names filled in), the trial user's secret (a random password) and the cluster's
TLS CA in ~/.adaptnet/tls. Idempotent: rerun it after changing aws.yaml. `--dry-run` prints the plan only.

  python clusters/aws_setup.py [--dry-run]
"""
from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROFILES = {"adaptnet-ray-head": "head-policy.json", "adaptnet-ray-worker": "worker-policy.json"}
NAMES = ("ADAPTNET_BUCKET", "ADAPTNET_MLFLOW_DB", "ADAPTNET_SECRET", "ADAPTNET_TRIAL_SECRET")


def settings(config: dict) -> dict[str, str]:
    """The values aws.yaml sets once: the ADAPTNET_* exports of its setup commands, the SSH range, the group."""
    text = " ".join(config["setup_commands"])
    found = {name: re.search(rf"export {name}=([^'\s]+)", text).group(1) for name in NAMES}
    group = config["provider"]["security_group"]
    (ssh,) = [r for r in group["IpPermissions"] if r.get("FromPort") == 22]
    (cidr,) = [r["CidrIp"] for r in ssh["IpRanges"]]
    return {**found, "ADAPTNET_ADMIN_CIDR": cidr, "group": group["GroupName"], "region": config["provider"]["region"]}


def policy(name: str, values: dict[str, str]) -> str:
    """A policy file of clusters/iam with the placeholders replaced by aws.yaml's values."""
    text = (HERE / "iam" / name).read_text()
    for key in sorted(NAMES, key=len, reverse=True):  # ADAPTNET_TRIAL_SECRET before ADAPTNET_SECRET
        text = text.replace(key, values[key])
    return json.dumps(json.loads(text))


def security_group(ec2, name: str, cidr: str, dry: bool) -> str:
    print(f"security group {name} (default VPC): SSH from {cidr}, all traffic among members")
    if dry:
        return "(dry run)"
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]},
                                                  {"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"]
    group = found[0]["GroupId"] if found else ec2.create_security_group(
        GroupName=name, Description="adaptnet Ray cluster", VpcId=vpc)["GroupId"]
    current = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
    if current:  # whatever was there (e.g. Ray's SSH from 0.0.0.0/0) goes
        ec2.revoke_security_group_ingress(GroupId=group, IpPermissions=current)
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": cidr, "Description": "admin SSH"}]},
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group}]}])
    return group


def profiles(iam, values: dict[str, str], dry: bool) -> None:
    trust = (HERE / "iam" / "ec2-trust.json").read_text()
    for name, file in PROFILES.items():
        print(f"role and instance profile {name}: clusters/iam/{file}")
        if dry:
            continue
        try:
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)
        except iam.exceptions.EntityAlreadyExistsException:
            pass
        iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=policy(file, values))
        try:
            iam.create_instance_profile(InstanceProfileName=name)
            iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        except iam.exceptions.EntityAlreadyExistsException:
            pass


def trial_secret(sm, name: str, dry: bool) -> None:
    print(f"secret {name}: the MLflow trial user (random password, made once)")
    if dry:
        return
    try:
        sm.create_secret(Name=name, SecretString=json.dumps({"username": "adaptnet-trials",
                                                             "password": secrets.token_urlsafe(24)}))
    except sm.exceptions.ResourceExistsException:
        pass


def main() -> int:
    import boto3
    import yaml

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=HERE / "aws.yaml")
    p.add_argument("--tls-dir", type=Path, default=Path.home() / ".adaptnet" / "tls")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args()
    values = settings(yaml.safe_load(args.config.read_text()))
    session = boto3.session.Session(region_name=values["region"])
    security_group(session.client("ec2"), values["group"], values["ADAPTNET_ADMIN_CIDR"], args.dry_run)
    profiles(session.client("iam"), values, args.dry_run)
    trial_secret(session.client("secretsmanager"), values["ADAPTNET_TRIAL_SECRET"], args.dry_run)
    print(f"TLS CA in {args.tls_dir} (shipped to every node by aws.yaml's file_mounts)")
    if not args.dry_run:
        sys.path.insert(0, str(HERE.parent / "platform"))
        from adaptnet.cluster.tls import make_ca

        make_ca(args.tls_dir)
    print(f"still yours to make once: the RDS instance {values['ADAPTNET_MLFLOW_DB']} and the secret "
          f"{values['ADAPTNET_SECRET']} (see the README)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
