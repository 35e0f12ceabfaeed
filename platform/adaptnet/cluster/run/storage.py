"""Where Ray Train keeps checkpoints: a local folder or s3://bucket/prefix (any S3-compatible endpoint)."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def storage_target(storage: str | None):
    """(storage_path, pyarrow filesystem or None) for `ray.train.RunConfig`.

    For s3:// with AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL set (MinIO, moto, …) an explicit pyarrow
    S3FileSystem carries the endpoint, and the path loses its scheme, as pyarrow expects."""
    if not storage:
        return str(Path("ray_results").resolve()), None
    if not storage.startswith("s3://"):
        return str(Path(storage).resolve()), None
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return storage, None
    import pyarrow.fs

    scheme, _, host = endpoint.partition("://")
    filesystem = pyarrow.fs.S3FileSystem(
        endpoint_override=host, scheme=scheme,
        access_key=os.environ.get("AWS_ACCESS_KEY_ID"), secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    return storage[len("s3://"):], filesystem


@contextlib.contextmanager
def local_copy(checkpoint):
    """A folder with a Ray Train checkpoint's files, private to this process.

    `Checkpoint.as_directory()` downloads a remote checkpoint into one temporary folder per node that every
    process on it shares; a process arriving after the first download has finished downloads again into that
    folder while the others read it, and they read torn files (seen: two workers resuming from S3). A local
    checkpoint is read in place."""
    import pyarrow.fs

    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        yield checkpoint.path
        return
    folder = tempfile.mkdtemp(prefix="adaptnet-checkpoint-")
    try:
        yield checkpoint.to_directory(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
