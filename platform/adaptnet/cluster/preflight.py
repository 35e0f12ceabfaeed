"""Cluster-side checks before any cluster work (no `ray.init`, no MLflow run, no file written): the tracking
URI's scheme is supported and its server answers, the Ray address, storage and experiment are well formed.
Failures are one-line `ConfigError`s naming the flag (or variable) and the value. Imports neither Ray nor MLflow.
"""
from __future__ import annotations

import importlib.util
import math
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..loop import ConfigError
from ..loop.preflight import S3_BUCKET

HEALTH_TIMEOUT_S = 5.0
TRACKING_SCHEMES = "sqlite:///path/mlflow.db, http(s)://host:port or postgresql://user@host:port/db"


def check_tracking_uri(uri: str, field: str = "--tracking-uri") -> None:
    """sqlite (its folder exists), postgresql (well formed, driver installed) or http(s) (`/health` answers)."""
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "sqlite":
        path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if not path:
            raise ConfigError(f"{field}: {uri!r} names no database file (sqlite:///path/mlflow.db)")
        db = Path(path)
        if not db.parent.is_dir():
            raise ConfigError(f"{field}: {uri!r}: folder {str(db.parent)!r} does not exist")
        if db.exists() and not db.is_file():
            raise ConfigError(f"{field}: {uri!r}: {path!r} is not a file")
    elif scheme in ("postgresql", "postgresql+psycopg2"):
        if not parsed.hostname or not parsed.path.strip("/"):
            raise ConfigError(f"{field}: {_redacted(uri)!r} needs a host and a database (postgresql://user@host:5432/db)")
        _port(parsed, field, uri)
        if importlib.util.find_spec("psycopg2") is None:
            raise ConfigError(f"{field}: a postgresql store needs the psycopg2-binary package (requirements.txt)")
    elif scheme in ("http", "https"):
        if not parsed.hostname:
            raise ConfigError(f"{field}: {uri!r} names no host")
        _port(parsed, field, uri)
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S,
                                        context=_tls_context(scheme)):
                pass
        except urllib.error.HTTPError:
            pass  # the server answered (e.g. 401 before credentials): it is there
        except (OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise ConfigError(f"{field}: no MLflow server answers at {_redacted(uri)} ({reason})") from None
    else:
        raise ConfigError(f"{field}: unsupported tracking URI {_redacted(uri)!r} (use {TRACKING_SCHEMES})")


def _tls_context(scheme: str):
    """https: verified against MLflow's own CA setting (MLFLOW_TRACKING_SERVER_CERT_PATH, as MLflow's client
    does), else the system's trust store."""
    if scheme != "https":
        return None
    import os
    import ssl

    return ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)


def _port(parsed, field: str, uri: str) -> None:
    try:
        parsed.port
    except ValueError:
        raise ConfigError(f"{field}: {_redacted(uri)!r} has an invalid port") from None


def _redacted(uri: str) -> str:
    parsed = urllib.parse.urlparse(uri)
    if parsed.password:
        return uri.replace(f":{parsed.password}@", ":***@")
    return uri


def check_address(address: str | None, field: str = "--address") -> None:
    """auto, local, ray://host:port or host:port; a host:port must accept a connection."""
    if address in (None, "auto", "local"):
        return
    target = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{field}: {address!r} is not auto, local, host:port or ray://host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=HEALTH_TIMEOUT_S).close()
    except OSError as err:
        raise ConfigError(f"{field}: nothing answers at {address} ({err.strerror or err})") from None


def check_storage(storage: str | None, field: str = "--storage") -> None:
    if not storage:
        return
    if storage.startswith("s3://"):
        bucket = storage[len("s3://"):].partition("/")[0]
        if not S3_BUCKET.match(bucket) or ".." in bucket:
            raise ConfigError(f"{field}: {storage!r} has no valid S3 bucket name ({bucket!r})")
        return
    if "://" in storage:
        raise ConfigError(f"{field}: {storage!r} is neither a folder nor s3://bucket/prefix")
    if Path(storage).exists() and not Path(storage).is_dir():
        raise ConfigError(f"{field}: {storage!r} exists and is not a folder")


def check_experiment(name: str, field: str = "--experiment") -> None:
    if not name.strip() or not name.isprintable() or len(name) > 200:
        raise ConfigError(f"{field}: {name!r} must be a non-empty printable name of at most 200 characters")


def check_resources(cpus: float | None, gpus: float | None, fields=("--cpus-per-worker", "--gpus-per-worker"),
                    workers: int | None = None) -> None:
    for value, field, low in ((cpus, fields[0], "positive"), (gpus, fields[1], "non-negative")):
        if value is None:
            continue
        if not math.isfinite(value) or value < 0 or (low == "positive" and value == 0):
            raise ConfigError(f"{field}: must be a finite {low} number, got {value}")
    if gpus and workers and workers > 1 and gpus != int(gpus):
        raise ConfigError(f"{fields[1]}: {gpus:g} GPU per worker with {workers} DDP workers would put two ranks on "
                          "one GPU, which NCCL refuses (ray-project/ray#48012); give whole GPUs, or one worker")


def check_cluster(tracking_uri: str, tracking_field: str, address: str | None = None, storage: str | None = None,
                  experiment: str = "adaptnet") -> None:
    """Every cluster-side input a training or sweep needs, cheapest first."""
    check_experiment(experiment)
    check_storage(storage)
    check_tracking_uri(tracking_uri, tracking_field)
    check_address(address)
