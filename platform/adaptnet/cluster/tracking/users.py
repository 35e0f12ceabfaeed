"""MLflow users of a cluster (MLflow's basic-auth app): the admin sets up, trials log as a user that may edit
the sweep experiments and nothing else. Run on the head by `clusters/aws.yaml` with the admin's pair in
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD and the trial user's in ADAPTNET_TRIAL_USERNAME /
ADAPTNET_TRIAL_PASSWORD:

  python -m adaptnet.cluster.tracking.users https://127.0.0.1:5000 adaptnet-sweeps adaptnet
"""
from __future__ import annotations

import argparse
import os
import sys

TRIAL_PERMISSION = "EDIT"  # read and write runs, models and tags of an experiment; never delete it or manage it


def provision(tracking_uri: str, trial_user: str, trial_password: str, experiments: list[str]) -> dict[str, str]:
    """As the admin (the environment's MLflow credentials): the trial user exists with this password, each
    experiment exists, and the trial user holds EDIT on it. Idempotent (a new head runs it again); returns
    {experiment name: id}."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    from .store import client, find_or_create_experiment

    auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    try:
        auth.create_user(trial_user, trial_password)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.update_user_password(trial_user, trial_password)
    tracker, ids = client(tracking_uri), {}
    for name in experiments:
        ids[name] = find_or_create_experiment(tracker, tracking_uri, name)
        try:
            auth.grant_user_permission(trial_user, "experiment", ids[name], TRIAL_PERMISSION)
        except MlflowException as err:  # held from an earlier setup: set it again
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            auth.revoke_user_permission(trial_user, "experiment", ids[name])
            auth.grant_user_permission(trial_user, "experiment", ids[name], TRIAL_PERMISSION)
    return ids


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tracking_uri")
    p.add_argument("experiments", nargs="+")
    args = p.parse_args()
    missing = [v for v in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "ADAPTNET_TRIAL_USERNAME",
                           "ADAPTNET_TRIAL_PASSWORD") if not os.environ.get(v)]
    if missing:
        print(f"users: error: {', '.join(missing)} not set", file=sys.stderr)
        return 2
    ids = provision(args.tracking_uri, os.environ["ADAPTNET_TRIAL_USERNAME"], os.environ["ADAPTNET_TRIAL_PASSWORD"],
                    args.experiments)
    print(f"trial user {os.environ['ADAPTNET_TRIAL_USERNAME']}: {TRIAL_PERMISSION} on " + ", ".join(ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
