# Sourced by ~/adaptnet/cluster.env on every node before `ray start`: the trial user's MLflow credentials, read
# from AWS Secrets Manager through the node's instance profile; on the head also the helpers that read the
# admin's secret and name the tracking store. Secrets live only in process environments, never in a file or
# on a command line.
#   secret $ADAPTNET_TRIAL_SECRET (JSON): {"username": ..., "password": ...}     head and workers (every Ray process)
#   secret $ADAPTNET_SECRET (JSON): {"username": ..., "password": ..., "db_password": ...}    the head's profile only
_adaptnet_aws() {
  python -c 'import boto3, json, sys
kind, name, field = sys.argv[1:4]
if kind == "secret":
    print(json.loads(boto3.client("secretsmanager").get_secret_value(SecretId=name)["SecretString"])[field])
else:
    print(boto3.client("rds").describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]["Endpoint"]["Address"])' "$@"
}
adaptnet_secret() { _adaptnet_aws secret "$1" "$2"; }
export MLFLOW_TRACKING_USERNAME="$(adaptnet_secret "$ADAPTNET_TRIAL_SECRET" username)"
export MLFLOW_TRACKING_PASSWORD="$(adaptnet_secret "$ADAPTNET_TRIAL_SECRET" password)"

# The head's backend store: the RDS PostgreSQL instance $ADAPTNET_MLFLOW_DB (database and user `mlflow`), over
# TLS verified against the RDS CA bundle; no password in the URI (the server's PGPASSWORD holds it).
adaptnet_tracking_store() {
  printf 'postgresql+psycopg2://mlflow@%s:5432/mlflow?sslmode=verify-full&sslrootcert=%s' \
    "$(_adaptnet_aws rds "$ADAPTNET_MLFLOW_DB" -)" "$HOME/.adaptnet/rds-ca.pem"
}
