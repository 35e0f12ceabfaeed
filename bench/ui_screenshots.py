"""What a user sees of a sweep in the MLflow UI: headless Chromium screenshots of a tracking store's views.

Starts `mlflow server` over the store on a free loopback port, opens the experiment's runs table, the newest
parent run (overview and its metrics), its comparison.md artifact, its runs grouped by arm (the saved view),
the models of the experiment, one registered version's logged model and version page, saves one PNG per
view, and stops the server. Needs Debian's `chromium` (apt-get install chromium) and a store with the
experiment (default: `make demo`'s ./mlflow.db); without either it says so in one line and exits 0.

  .venv/bin/python bench/ui_screenshots.py --tracking-uri sqlite:///mlflow.db --out ui-shots
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def screenshot(browser: str, url: str, path: Path, wait_ms: int = 8000) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                        "--window-size=1600,1000", f"--virtual-time-budget={wait_ms}", f"--screenshot={path}", url],
                       check=True, capture_output=True, timeout=120)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="the store a sweep logged to (default: the demo's)")
    p.add_argument("--experiment", default="adaptnet-sweeps")
    p.add_argument("--out", default="ui-shots", help="folder for the PNGs")
    args = p.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        print("ui_screenshots: needs Debian's chromium (apt-get install chromium); nothing taken")
        return 0
    if args.tracking_uri.startswith("sqlite:///") and not Path(args.tracking_uri[len("sqlite:///"):]).is_file():
        print(f"ui_screenshots: no store at {args.tracking_uri} (run `make demo` first); nothing taken")
        return 0
    from mlflow.tracking import MlflowClient

    from adaptnet.cluster.tracking.models import registered_name
    from adaptnet.cluster.tracking.runs import SWEEP_TAG
    from adaptnet.cluster.tracking.views import VIEW_TAG, view_key

    store = MlflowClient(args.tracking_uri)
    experiment = store.get_experiment_by_name(args.experiment)
    if experiment is None:
        print(f"ui_screenshots: no experiment {args.experiment!r} in {args.tracking_uri}; nothing taken")
        return 0
    parents = [r for r in store.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
               if "mlflow.parentRunId" not in r.data.tags]
    port, out = free_port(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri",
                               args.tracking_uri, "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        exp = f"{base}/#/experiments/{experiment.experiment_id}"
        views = {"experiment": f"{exp}?workflowType=machine_learning", "models": f"{exp}/models"}
        if parents:
            parent = parents[0]
            run = f"{exp}/runs/{parent.info.run_id}"
            views |= {"parent": run, "parent-metrics": f"{run}/model-metrics",
                      "comparison-md": f"{run}/artifacts/comparison.md"}
            sweep = parent.data.tags.get(SWEEP_TAG, "")
            if VIEW_TAG + view_key(sweep) in experiment.tags:
                views["runs-by-arm"] = f"{exp}/runs?workflowType=machine_learning&viewStateShareKey={view_key(sweep)}"
            versions = store.search_model_versions(f"name = '{registered_name(sweep)}'")
            if versions:
                version = versions[0]
                model_id = version.source.removeprefix("models:/")
                views |= {"logged-model": f"{exp}/models/{model_id}",
                          "model-version": f"{base}/#/models/{version.name}/versions/{version.version}"}
        for name, url in views.items():
            screenshot(browser, url, out / f"{name}.png")
            print(out / f"{name}.png", url)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
