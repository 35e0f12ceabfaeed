# Sourced by ~/adaptnet/cluster.env on every node before `ray start` and `mlflow server`: the MLflow
# credentials and the tracking store's address, read from AWS Secrets Manager and RDS through the node's
# IAM instance profile. Secrets live only in process environments, never in a file.
#   secret $ADAPTNET_SECRET (JSON): {"username": ..., "password": ..., "db_password": ...}
_adaptnet_aws() {
  python -c 'import boto3, json, sys
kind, name, field = sys.argv[1:4]
if kind == "secret":
    print(json.loads(boto3.client("secretsmanager").get_secret_value(SecretId=name)["SecretString"])[field])
else:
    print(boto3.client("rds").describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]["Endpoint"]["Address"])' "$@"
}
export MLFLOW_TRACKING_USERNAME="$(_adaptnet_aws secret "$ADAPTNET_SECRET" username)"
export MLFLOW_TRACKING_PASSWORD="$(_adaptnet_aws secret "$ADAPTNET_SECRET" password)"

# The head's backend store: the RDS PostgreSQL instance $ADAPTNET_MLFLOW_DB (database and user `mlflow`).
adaptnet_tracking_store() {
  printf 'postgresql+psycopg2://mlflow:%s@%s:5432/mlflow' "$(_adaptnet_aws secret "$ADAPTNET_SECRET" db_password)" \
    "$(_adaptnet_aws rds "$ADAPTNET_MLFLOW_DB" -)"
}
