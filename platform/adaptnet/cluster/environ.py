"""Environment variables set for the length of a block, never at import time."""
from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def scoped_environ(values: dict[str, str], override: bool = True):
    """`values` in os.environ inside the block (with `override=False` only the names not set already); each
    name is back to what it was afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items() if override or saved[k] is None})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
