"""An exported model served on this machine: `mlflow models serve --env-manager local` of one model folder on
a loopback port, in its own process group (stopped with it), ready once `/ping` answers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PACKAGE_PARENT = Path(__file__).resolve().parents[3]  # the folder holding the adaptnet package


class LocalModelServer:
    def __init__(self, model_dir: Path, port: int, log: Path | None = None, startup_s: float = 180, workers: int = 1):
        self.port = port
        bin_dir = Path(sys.executable).parent
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(PACKAGE_PARENT)}
        with open(log or os.devnull, "w") as out:  # the server keeps its own copy of the handle
            self.proc = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m", str(model_dir),
                                          "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
                                          "--workers", str(workers)],
                                         env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited with {self.proc.returncode}"
                                   + (f": {log.read_text()[-3000:]}" if log else ""))
            try:
                urllib.request.urlopen(f"{self.url}/ping", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow models serve did not answer within {startup_s:.0f} s")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
