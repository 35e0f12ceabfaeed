"""The one rule that turns a dataset spec into what is loaded, for the CLI, the Makefile and the sweeps alike.

* `cifar10` / `cifar100` (any case): the JPEG mirror `<data dir>/<name>-jpeg.tar.gz` when that file exists,
  else the name itself (torchvision then downloads it into the cache).
* Anything else (a folder, an archive, `s3://…`) is returned unchanged.

The data dir is `$ADAPTNET_DATA_DIR`, else the `ADAPTNET_DATA_DIR=` line of `<venv>/adaptnet.env` (the
Makefile's install writes it there: `../shared/data` of the checkout when that folder exists, so
`.venv/bin/adaptnet` finds the mirrors without any environment), else there is none.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

NAMED = ("cifar10", "cifar100")
VENV_RECORD = "adaptnet.env"  # KEY=VALUE lines in the venv's root (sys.prefix), like pip's `<venv>/pip.conf`


def data_dir(env: dict[str, str] | None = None, prefix: str | None = None) -> Path | None:
    """Where named datasets' mirrors are looked for, or None (see the module docstring)."""
    env = os.environ if env is None else env
    if env.get("ADAPTNET_DATA_DIR"):
        return Path(env["ADAPTNET_DATA_DIR"]).expanduser()
    record = Path(sys.prefix if prefix is None else prefix) / VENV_RECORD
    if record.is_file():
        for line in record.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "ADAPTNET_DATA_DIR" and value.strip():
                return Path(value.strip()).expanduser()
    return None


def resolve_dataset_spec(spec: str, env: dict[str, str] | None = None, prefix: str | None = None) -> str:
    """`cifar10`/`cifar100` → the absolute path of their mirror in the data dir when it exists; else `spec`."""
    name = spec.lower()
    if name not in NAMED:
        return spec
    folder = data_dir(env, prefix)
    mirror = folder / f"{name}-jpeg.tar.gz" if folder else None
    return str(mirror.resolve()) if mirror and mirror.is_file() else spec
