"""Malformed input, as an attacker or a tired user types it: every case is one line on stderr naming the
field, exit code 2, no traceback, no Ray or MLflow process, no Ray session directory, and not one byte
changed under an existing `runs/` and `mlflow.db`.

CASES is the table to extend: (id, argv, field). argv starts with `adaptnet` or a script in sweeps/;
`{ckpt:NAME}` stands for a checkpoint made by the `workspace` fixture, `{closed}` for a port nobody
listens on, `{file}` for an existing plain file. Most cases run in this process (`adaptnet.cli.main`, or
the script via runpy); SUBPROCESS_CASES also run as real processes.
"""
from __future__ import annotations

import hashlib
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import free_port

REPO = Path(__file__).resolve().parents[1]
W = ["--workers", "2"]
# 280 bytes of YAML whose aliases expand to 9^9 strings: rendering it whole would take gigabytes
BOMB = "[" + ",".join(f"&{a} [{','.join([f'*{p}' if p else 'x'] * 9)}]" for p, a in zip(["", *"abcdefgh"], "abcdefghi")) + "]"
CASES = [
    # adaptnet train: overrides and config files
    ("override-yaml-bracket", ["adaptnet", "train", "cifar10-smoke", "train.epochs=["], "train.epochs"),
    ("override-yaml-brace", ["adaptnet", "train", "cifar10-smoke", "model.args={n_blocks: 3"], "model.args"),
    ("override-python-tag", ["adaptnet", "train", "cifar10-smoke", "name=!!python/object:os.system x"], "name"),
    ("epochs-zero", ["adaptnet", "train", "cifar10-smoke", "train.epochs=0"], "train.epochs"),
    ("epochs-text", ["adaptnet", "train", "cifar10-smoke", "train.epochs=ten"], "train.epochs"),
    ("epochs-float", ["adaptnet", "train", "cifar10-smoke", "train.epochs=1e9"], "train.epochs"),
    ("lr-negative", ["adaptnet", "train", "cifar10-smoke", "optim.lr=-1"], "optim.lr"),
    ("lr-infinite", ["adaptnet", "train", "cifar10-smoke", "optim.lr=.inf"], "optim.lr"),
    ("lr-nan", ["adaptnet", "train", "cifar10-smoke", "optim.lr=.nan"], "optim.lr"),
    ("momentum-one", ["adaptnet", "train", "cifar10-smoke", "optim.momentum=1"], "optim.momentum"),
    ("batch-size-zero", ["adaptnet", "train", "cifar10-smoke", "train.batch_size=0"], "train.batch_size"),
    ("holdout-negative", ["adaptnet", "train", "cifar10-smoke", "data.holdout=-1"], "data.holdout"),
    ("unknown-section", ["adaptnet", "train", "cifar10-smoke", "nosuch.key=1"], "nosuch"),
    ("unknown-key", ["adaptnet", "train", "cifar10-smoke", "train.epoch=3"], "train.epoch"),
    ("override-no-equals", ["adaptnet", "train", "cifar10-smoke", "train.epochs"], "train.epochs"),
    ("override-empty-key", ["adaptnet", "train", "cifar10-smoke", "=3"], "override"),
    ("override-empty-part", ["adaptnet", "train", "cifar10-smoke", "train..epochs=3"], "train..epochs"),
    ("section-is-a-value", ["adaptnet", "train", "cifar10-smoke", "train.epochs.x=3"], "train.epochs"),
    ("unknown-model", ["adaptnet", "train", "cifar10-smoke", "model.name=resnet9000"], "model.name"),
    ("unknown-model-arg", ["adaptnet", "train", "cifar10-smoke", "model.args={bogus: 1}"], "model.args.bogus"),
    ("exit-weights-count", ["adaptnet", "train", "cifar10-smoke", "train.exit_weights=[1, 2]"], "train.exit_weights"),
    ("technique-family", ["adaptnet", "train", "cifar10-smoke", "technique=adn_distill"], "technique"),
    ("stage2-no-stage1", ["adaptnet", "train", "cifar10-smoke", "technique=imta_stage2"], "imta.stage1_checkpoint"),
    ("config-missing", ["adaptnet", "train", "no-such-config.yaml"], "config"),
    ("config-not-yaml", ["adaptnet", "train", "{badyaml}"], "config"),
    ("config-a-list", ["adaptnet", "train", "{listyaml}"], "config"),
    # inputs that could hang or exhaust memory (also run as processes within time and memory bounds)
    ("model-blocks-huge", ["adaptnet", "train", "cifar10-smoke", "model.args.n_blocks=100000"], "model.args.n_blocks"),
    ("model-blocks-huge-dry-run", ["adaptnet", "train", "cifar10-smoke", "model.args.n_blocks=100000", "--dry-run"],
     "model.args.n_blocks"),
    ("model-depths-long-list", ["adaptnet", "train", "cifar10-resnet56-adn", f"model.args.depths={[9] * 10000}"],
     "model.args.depths"),
    ("yaml-alias-bomb", ["adaptnet", "train", "cifar10-smoke", f"name={BOMB}"], "name"),
    ("yaml-alias-bomb-file", ["adaptnet", "train", "{bombyaml}"], "config"),
    ("name-huge", ["adaptnet", "train", "cifar10-smoke", "name=" + "x" * 100_000], "name"),
    ("sweep-set-alias-bomb", ["sweeps/exit_weights.py", "--set", f"name={BOMB}"], "name"),
    ("adn-nothing-skippable", ["adaptnet", "train", "cifar10-resnet56-adn", "model.args.n_mandatory=[9,9,9]"],
     "model.args.n_mandatory"),
    ("export-budget-nan", ["adaptnet", "export", "{ckpt:good}", "--budget", "nan", "--out", "x"], "--budget"),
    ("export-budget-inf", ["adaptnet", "export", "{ckpt:good}", "--budget", "20e6,inf", "--out", "x"], "--budget"),
    ("gpus-fractional-ddp", ["adaptnet", "train", "cifar10-smoke", *W, "--gpus-per-worker", "0.5"], "--gpus-per-worker"),
    ("sweep-gpus-fractional-ddp", ["sweeps/adn_subpaths.py", "--workers", "2", "--gpus-per-worker", "0.5"],
     "--gpus-per-worker"),
    ("data-odd-size", ["adaptnet", "train", "cifar10-smoke", "data.dataset={data:oddsize}", "data.holdout=1"],
     "data.dataset"),
    # names
    ("name-dotdot", ["adaptnet", "train", "cifar10-smoke", "name=.."], "name"),
    ("name-dot", ["adaptnet", "train", "cifar10-smoke", "name=."], "name"),
    ("name-slash", ["adaptnet", "train", "cifar10-smoke", "name=../../etc"], "name"),
    ("name-quote", ["adaptnet", "train", "cifar10-smoke", "name=it's"], "name"),
    ("name-empty", ["adaptnet", "train", "cifar10-smoke", "name=''"], "name"),
    # the dataset
    ("dataset-missing", ["adaptnet", "train", "cifar10-smoke", "data.dataset=/no/such/data.tar.gz"], "data.dataset"),
    ("dataset-s3-no-bucket", ["adaptnet", "train", "cifar10-smoke", "data.dataset=s3://"], "data.dataset"),
    ("dataset-s3-no-key", ["adaptnet", "train", "cifar10-smoke", "data.dataset=s3://bucket"], "data.dataset"),
    ("dataset-s3-bad-bucket", ["adaptnet", "train", "cifar10-smoke", "data.dataset=s3://Bad_Bucket/x.tgz"], "data.dataset"),
    ("dataset-scheme", ["adaptnet", "train", "cifar10-smoke", "data.dataset=ftp://host/x.tar.gz"], "data.dataset"),
    ("dataset-missing-workers", ["adaptnet", "train", "cifar10-smoke", "data.dataset=/no/such", *W], "data.dataset"),
    # run records: runs/existing holds a finished run of cifar10-smoke (name=existing)
    ("rerun-other-lr", ["adaptnet", "train", "cifar10-smoke", "name=existing", "optim.lr=0.05"], "optim.lr"),
    ("rerun-other-model", ["adaptnet", "train", "cifar10-smoke", "name=existing", "model.name=msdnet_cifar_budgeted"],
     "model.name"),
    ("rerun-fewer-epochs", ["adaptnet", "train", "cifar10-smoke", "name=existing", "train.epochs=1"], "train.epochs"),
    ("rerun-no-resume", ["adaptnet", "train", "cifar10-smoke", "name=existing", "train.resume=false"], "train.resume"),
    ("rerun-other-lr-workers", ["adaptnet", "train", "cifar10-smoke", "name=existing", "optim.lr=0.05", *W], "optim.lr"),
    ("mlflow-run-other-lr", ["adaptnet", "train", "cifar10-smoke", "name=existing", "output_dir=elsewhere",
                             "optim.lr=0.05", *W], "optim.lr"),  # only the tracking store knows this run
    ("resume-other-model-checkpoint", ["adaptnet", "train", "cifar10-smoke", "name=swapped"], "train.resume"),
    ("stage1-of-another-model", ["adaptnet", "train", "cifar10-smoke", "technique=imta_stage2",
                                 "imta.stage1_checkpoint={ckpt:adn}"], "imta.stage1_checkpoint"),
    ("split-from-missing", ["adaptnet", "train", "cifar10-smoke", "data.split_from=/no/such.pt"], "data.split_from"),
    ("device-cuda-on-cpu", ["adaptnet", "train", "cifar10-smoke", "train.device=cuda"], "train.device"),
    # adaptnet train --workers: flags and the cluster side
    ("workers-zero", ["adaptnet", "train", "cifar10-smoke", "--workers", "0"], "--workers"),
    ("workers-text", ["adaptnet", "train", "cifar10-smoke", "--workers", "two"], "--workers"),
    ("cpus-zero", ["adaptnet", "train", "cifar10-smoke", *W, "--cpus-per-worker", "0"], "--cpus-per-worker"),
    ("cpus-nan", ["adaptnet", "train", "cifar10-smoke", *W, "--cpus-per-worker", "nan"], "--cpus-per-worker"),
    ("gpus-negative", ["adaptnet", "train", "cifar10-smoke", *W, "--gpus-per-worker", "-1"], "--gpus-per-worker"),
    ("max-failures", ["adaptnet", "train", "cifar10-smoke", *W, "--max-failures", "-5"], "--max-failures"),
    ("tracking-scheme", ["adaptnet", "train", "cifar10-smoke", *W, "--tracking-uri", "ftp://x"], "--tracking-uri"),
    ("tracking-down", ["adaptnet", "train", "cifar10-smoke", *W, "--tracking-uri", "http://127.0.0.1:{closed}"],
     "--tracking-uri"),
    ("tracking-sqlite-folder", ["adaptnet", "train", "cifar10-smoke", *W, "--tracking-uri",
                                "sqlite:////no/such/folder/mlflow.db"], "--tracking-uri"),
    ("tracking-sqlite-memory", ["adaptnet", "train", "cifar10-smoke", *W, "--tracking-uri", "sqlite://"],
     "--tracking-uri"),
    ("tracking-postgres-no-db", ["adaptnet", "train", "cifar10-smoke", *W, "--tracking-uri", "postgresql://h"],
     "--tracking-uri"),
    ("tracking-bad-port", ["adaptnet", "train", "cifar10-smoke", *W, "--tracking-uri", "http://127.0.0.1:99999"],
     "--tracking-uri"),
    ("address-garbage", ["adaptnet", "train", "cifar10-smoke", *W, "--address", "not an address"], "--address"),
    ("address-closed", ["adaptnet", "train", "cifar10-smoke", *W, "--address", "127.0.0.1:{closed}"], "--address"),
    ("storage-bad-bucket", ["adaptnet", "train", "cifar10-smoke", *W, "--storage", "s3://UPPER/x"], "--storage"),
    ("storage-a-file", ["adaptnet", "train", "cifar10-smoke", *W, "--storage", "{file}"], "--storage"),
    ("experiment-empty", ["adaptnet", "train", "cifar10-smoke", *W, "--experiment", ""], "--experiment"),
    ("unknown-flag", ["adaptnet", "train", "cifar10-smoke", "--bogus"], "--bogus"),
    # adaptnet costs
    ("costs-input-zero", ["adaptnet", "costs", "msdnet_cifar_anytime", "--input-size", "0"], "--input-size"),
    ("costs-input-negative", ["adaptnet", "costs", "msdnet_cifar_anytime", "--input-size", "-3"], "--input-size"),
    ("costs-input-tiny", ["adaptnet", "costs", "msdnet_cifar_anytime", "--input-size", "2"], "--input-size"),
    ("costs-input-huge", ["adaptnet", "costs", "msdnet_cifar_anytime", "--input-size", "1000000"], "--input-size"),
    ("costs-classes-zero", ["adaptnet", "costs", "msdnet_cifar_anytime", "--num-classes", "0"], "--num-classes"),
    ("costs-classes-huge", ["adaptnet", "costs", "msdnet_cifar_anytime", "--num-classes", "999999999"], "--num-classes"),
    ("costs-unknown-model", ["adaptnet", "costs", "msdnet9000"], "model"),
    # adaptnet evaluate
    ("eval-missing", ["adaptnet", "evaluate", "/no/such.pt"], "checkpoint"),
    ("eval-not-a-checkpoint", ["adaptnet", "evaluate", "{file}"], "checkpoint"),
    ("eval-stale-config", ["adaptnet", "evaluate", "{ckpt:stale}"], "checkpoint"),
    ("eval-second-missing", ["adaptnet", "evaluate", "{ckpt:good}", "/no/such.pt"], "checkpoint"),
    ("eval-budgets-text", ["adaptnet", "evaluate", "{ckpt:good}", "--budgets", "a,b"], "--budgets"),
    ("eval-budgets-negative", ["adaptnet", "evaluate", "{ckpt:good}", "--budgets", "-1"], "--budgets"),
    ("eval-budgets-nan", ["adaptnet", "evaluate", "{ckpt:good}", "--budgets", "nan"], "--budgets"),
    ("eval-device", ["adaptnet", "evaluate", "{ckpt:good}", "--device", "tpu"], "--device"),
    ("eval-plot-dir-a-file", ["adaptnet", "evaluate", "{ckpt:good}", "--plot-dir", "{file}"], "--plot-dir"),
    ("no-command", ["adaptnet"], "command"),
    ("unknown-command", ["adaptnet", "frobnicate"], "frobnicate"),
    # sweep scripts
    ("sweep-trials-zero", ["sweeps/exit_weights.py", "--trials", "0"], "--trials"),
    ("sweep-name-quote", ["sweeps/exit_weights.py", "--name", "it's"], "--name"),
    ("sweep-name-dotdot", ["sweeps/exit_weights.py", "--name", ".."], "--name"),
    ("sweep-name-slash", ["sweeps/kd_temperature.py", "--name", "a/b"], "--name"),
    ("sweep-override-yaml", ["sweeps/exit_weights.py", "--set", "train.epochs=["], "train.epochs"),
    ("sweep-dataset-missing", ["sweeps/exit_weights.py", "--dataset", "/no/such/data"], "--dataset"),
    ("sweep-tracking-scheme", ["sweeps/exit_weights.py", "--tracking-uri", "ftp://x"], "--tracking-uri"),
    ("sweep-tracking-down", ["sweeps/adn_subpaths.py", "--tracking-uri", "http://127.0.0.1:{closed}"], "--tracking-uri"),
    ("sweep-address", ["sweeps/exit_weights.py", "--address", "nowhere"], "--address"),
    ("sweep-storage", ["sweeps/adn_subpaths.py", "--storage", "gs://bucket/x"], "--storage"),
    ("sweep-cpus-zero", ["sweeps/adn_subpaths.py", "--cpus-per-worker", "0"], "--cpus-per-worker"),
    ("sweep-preset", ["sweeps/kd_temperature.py", "--preset", "nosuch"], "--preset"),
    ("sweep-experiment", ["sweeps/kd_temperature.py", "--experiment", " "], "--experiment"),
    ("gvb-arms", ["sweeps/ge_vs_baseline.py", "--preset", "smoke", "--arms", "ge,imta"], "--arms"),
    ("gvb-seeds", ["sweeps/ge_vs_baseline.py", "--preset", "smoke", "--seeds", "0"], "--seeds"),
    ("gvb-lr", ["sweeps/ge_vs_baseline.py", "--preset", "smoke", "--set", "optim.lr=-1"], "optim.lr"),
    ("gvb-name-quote", ["sweeps/ge_vs_baseline.py", "--preset", "smoke", "--name", "x' or '1'='1"], "--name"),
    ("gvb-dataset-missing", ["sweeps/ge_vs_baseline.py", "--preset", "smoke", "--dataset", "/no/such"], "--dataset"),
    # datasets and the data path ({data:NAME}: a malformed dataset made by the workspace fixture)
    ("data-no-val-split", ["adaptnet", "train", "cifar10-smoke", "data.dataset={data:nosplit}"], "data.dataset"),
    ("data-empty-class", ["adaptnet", "train", "cifar10-smoke", "data.dataset={data:emptyclass}"], "data.dataset"),
    ("data-shards-no-index", ["adaptnet", "train", "cifar10-smoke", "data.dataset={data:noindex}"], "data.dataset"),
    ("data-shard-not-indexed", ["adaptnet", "train", "cifar10-smoke", "data.dataset={data:strayshard}"], "data.dataset"),
    ("data-shard-missing", ["adaptnet", "train", "cifar10-smoke", "data.dataset={data:lostshard}"], "data.dataset"),
    ("data-workers-no-split", ["adaptnet", "train", "cifar10-smoke", "data.dataset={data:nosplit}", *W], "data.dataset"),
    ("data-loader-ray-one-process", ["adaptnet", "train", "cifar10-smoke", "data.loader=ray"], "data.loader"),
    ("data-loader-unknown", ["adaptnet", "train", "cifar10-smoke", "data.loader=dali"], "data.loader"),
    ("data-decode-unknown", ["adaptnet", "train", "cifar10-smoke", "data.decode=nvdec"], "data.decode"),
    ("data-decode-gpu-no-cuda", ["adaptnet", "train", "cifar10-smoke", "data.decode=gpu", "train.device=cpu"],
     "data.decode"),
    ("data-decode-gpu-no-gpus", ["adaptnet", "train", "cifar10-smoke", "data.decode=gpu", *W, "--gpus-per-worker", "0"],
     "data.decode"),
    ("data-eval-crop-over-resize", ["adaptnet", "train", "cifar10-smoke", "data.augment.eval_crop=300"],
     "data.augment.eval_crop"),
    ("data-erasing-over-one", ["adaptnet", "train", "cifar10-smoke", "data.augment.random_erasing=2"],
     "data.augment.random_erasing"),
    ("batch-not-divisible", ["adaptnet", "train", "cifar10-smoke", *W, "train.batch_size=63"], "train.batch_size"),
    ("accumulate-not-divisible", ["adaptnet", "train", "cifar10-smoke", "train.accumulate_steps=5"],
     "train.accumulate_steps"),
    ("data-inspect-missing", ["adaptnet", "data", "inspect", "/no/such/data"], "data.dataset"),
    ("data-inspect-no-index", ["adaptnet", "data", "inspect", "{data:noindex}"], "data.dataset"),
    ("data-shard-size-zero", ["adaptnet", "data", "shard", "{data:emptyclass}", "{data:out}", "--shard-size", "0"],
     "--shard-size"),
    ("data-shard-into-runs", ["adaptnet", "data", "shard", "{data:good}", "{runs}"], "DST"),
    ("sweep-dataset-no-split", ["sweeps/exit_weights.py", "--dataset", "{data:nosplit}"], "--dataset"),
]
SUBPROCESS_CASES = ["override-yaml-bracket", "tracking-down", "costs-input-zero", "eval-stale-config",
                    "sweep-name-quote", "gvb-dataset-missing", "rerun-other-lr-workers"]
BOUNDED_CASES = ["model-blocks-huge", "model-blocks-huge-dry-run", "model-depths-long-list", "yaml-alias-bomb",
                 "yaml-alias-bomb-file", "name-huge", "sweep-set-alias-bomb", "adn-nothing-skippable",
                 "export-budget-nan", "data-odd-size"]
BOUNDS = {"seconds": 60, "rss_bytes": 1 << 30}
MAX_LINE = 600  # characters of an error line (the message is cut at 400, plus the program's prefix and hint)


def _tiny_checkpoint(path: Path, tree: dict, model_name: str = "msdnet_cifar_anytime") -> None:
    from adaptnet.loop.checkpoint import save_checkpoint
    from adaptnet.models import create_model

    with torch.device("meta"):
        keys = list(create_model(model_name).state_dict())
    save_checkpoint(path, {"model": {k: torch.zeros(1) for k in keys}, "optimizer": {}, "scheduler": {},
                           "scaler": {}, "epoch": 1, "config": tree, "split": {"n": 0}})


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, cifar10_spec):
    """A working directory as a user has it: runs/existing (a cifar10-smoke run), runs/swapped (its
    checkpoint holds another model), an mlflow.db holding runs, and some checkpoints."""
    from adaptnet.cluster.tracking.store import find_or_create_run, flatten
    from adaptnet.loop import load_config

    root = tmp_path_factory.mktemp("workspace")
    cfg = load_config("cifar10-smoke", ["name=existing", f"output_dir={root / 'runs'}"])
    for name, model in (("existing", cfg.model.name), ("swapped", "resnet56_adn")):
        run = cfg.model_copy(update={"name": name})
        run_dir = root / "runs" / name
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(run.model_dump_json(indent=2))
        saved = run.model_dump() if name == "existing" else {**run.model_dump(), "model": {"name": model, "args": {},
                                                                                             "ge_scope": None}}
        _tiny_checkpoint(run_dir / "checkpoints" / "last.pt", saved, model)
        (run_dir / "metrics.jsonl").write_text('{"epoch": 1}\n')
    checkpoints = root / "checkpoints"
    checkpoints.mkdir()
    good = cfg.model_dump()
    _tiny_checkpoint(checkpoints / "good.pt", good)
    _tiny_checkpoint(checkpoints / "stale.pt", {**good, "optim": {**good["optim"], "lr": -1.0, "retired_field": 1}})
    adn = load_config("cifar10-resnet56-adn", ["name=adn"]).model_dump()
    _tiny_checkpoint(checkpoints / "adn.pt", adn, adn["model"]["name"])
    (root / "notes.txt").write_text("not a checkpoint\n")
    _bad_datasets(root / "data")
    (root / "bad.yaml").write_text("train: [\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "bomb.yaml").write_text(f"name: {BOMB}\n")
    # the tracking store: a run logged by `adaptnet train --workers` under the default storage
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    workers_cfg = cfg.model_copy(update={"output_dir": str(root / "runs")})
    find_or_create_run(tracking, "adaptnet", run_key=f"{root / 'ray_results'}/existing", run_name="existing",
                       params={**flatten(workers_cfg.model_dump()), "cluster.workers": 2})
    return root


def _bad_datasets(data: Path) -> None:
    """ImageFolders with one thing wrong each (real JPEGs), and tar shards whose index.json is missing."""
    from PIL import Image

    from adaptnet.data.shards import write_shards

    def jpeg(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (90, 30, 200)).save(path)

    for split in ("train", "val"):
        jpeg(data / "good" / split / "a" / "0.jpg")
        jpeg(data / "emptyclass" / split / "a" / "0.jpg")
    (data / "emptyclass" / "train" / "b").mkdir()
    jpeg(data / "nosplit" / "train" / "a" / "0.jpg")
    for split in ("train", "val"):  # a same-size set with one image of another size
        for i in range(3):
            jpeg(data / "oddsize" / split / "a" / f"{i}.jpg")
    Image.new("RGB", (12, 12), (90, 30, 200)).save(data / "oddsize" / "train" / "a" / "odd.jpg")
    write_shards(str(data / "good"), str(data / "noindex"), shard_size=1)
    (data / "noindex" / "index.json").unlink()
    write_shards(str(data / "good"), str(data / "strayshard"), shard_size=1)  # a shard its index does not name
    (data / "strayshard" / "train-00099.tar").write_bytes((data / "strayshard" / "train-00000.tar").read_bytes())
    write_shards(str(data / "good"), str(data / "lostshard"), shard_size=1)  # a shard its index names, gone
    (data / "lostshard" / "train-00000.tar").unlink()


def _argv(case_argv: list[str], root: Path, closed: int) -> list[str]:
    subs = {"{closed}": str(closed), "{file}": str(root / "notes.txt"), "{badyaml}": str(root / "bad.yaml"),
            "{listyaml}": str(root / "list.yaml"), "{runs}": str(root / "runs"), "{bombyaml}": str(root / "bomb.yaml")}
    out = []
    for arg in case_argv:
        for key, value in subs.items():
            arg = arg.replace(key, value)
        arg = re.sub(r"\{data:(\w+)\}", lambda m: str(root / "data" / m.group(1)), arg)
        out.append(re.sub(r"\{ckpt:(\w+)\}", lambda m: str(root / "checkpoints" / f"{m.group(1)}.pt"), arg))
    return out


def _tree_hash(root: Path) -> str:
    """Every path and byte of the workspace: runs/, mlflow.db, checkpoints, and anything new beside them."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _children(pid: int) -> set[int]:
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _check(case_id: str, code, stderr: str, field: str, root: Path, before: str, ray_tmp: Path) -> None:
    lines = stderr.strip().splitlines()
    assert code == 2, f"{case_id}: exit {code}, stderr {stderr[-2000:]}"
    assert len(lines) == 1, f"{case_id}: {len(lines)} lines: {stderr[-2000:]}"
    assert len(lines[0]) <= MAX_LINE, f"{case_id}: a line of {len(lines[0])} characters"
    assert field in lines[0] and "Traceback" not in stderr, f"{case_id}: {lines[0]}"
    assert ": error: " in lines[0], lines[0]
    assert not any(ray_tmp.iterdir()), f"{case_id}: a Ray session was created: {list(ray_tmp.iterdir())}"
    assert _tree_hash(root) == before, f"{case_id}: runs/ or mlflow.db changed"


@pytest.fixture
def isolated(workspace, tmp_path, monkeypatch):
    ray_tmp = tmp_path / "ray-tmp"
    ray_tmp.mkdir()
    for var in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "ADAPTNET_STORAGE", "ADAPTNET_DATASET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    monkeypatch.chdir(workspace)
    return ray_tmp


@pytest.mark.parametrize("case_id, argv, field", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_before_any_work(case_id, argv, field, workspace, isolated, capsys, monkeypatch):
    argv = _argv(argv, workspace, free_port())
    before = _tree_hash(workspace)
    children = _children(os.getpid())
    capsys.readouterr()
    if argv[0] == "adaptnet":
        from adaptnet.cli import main

        try:
            code = main(argv[1:])
        except SystemExit as stop:
            code = stop.code
    else:
        monkeypatch.setattr(sys, "argv", [str(REPO / argv[0]), *argv[1:]])
        try:
            runpy.run_path(str(REPO / argv[0]), run_name="__main__")
            code = None
        except SystemExit as stop:
            code = stop.code
    stderr = capsys.readouterr().err
    _check(case_id, code, stderr, field, workspace, before, isolated)
    if "ray" in sys.modules:
        assert not sys.modules["ray"].is_initialized(), case_id
    assert _children(os.getpid()) <= children, f"{case_id}: started processes"


def test_bad_input_as_real_processes(workspace, isolated, tmp_path):
    """A few cases as a user runs them: separate processes (in their own session) with a private TMPDIR,
    all at once; none may leave a process behind or create a Ray session."""
    table = {c[0]: c for c in CASES}
    env = {**os.environ, "TMPDIR": str(isolated), "PYTHONPATH": str(REPO / "platform")}
    before = _tree_hash(workspace)
    procs = {}
    for case_id in SUBPROCESS_CASES:
        _, argv, field = table[case_id]
        argv = _argv(argv, workspace, free_port())
        command = ([sys.executable, "-m", "adaptnet.cli", *argv[1:]] if argv[0] == "adaptnet"
                   else [sys.executable, str(REPO / argv[0]), *argv[1:]])
        procs[case_id] = (subprocess.Popen(command, cwd=workspace, env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True, start_new_session=True), field)
    for case_id, (proc, field) in procs.items():
        _, stderr = proc.communicate(timeout=300)
        _check(case_id, proc.returncode, stderr, field, workspace, before, isolated)
    for proc in Path("/proc").iterdir():  # nothing of those sessions is left
        try:
            sid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3])
        except (OSError, IndexError, ValueError):
            continue
        assert sid not in {p.pid for p, _ in procs.values()}, f"process {proc.name} left behind"


# Runs argv[2:] and writes its peak RSS (kilobytes) to argv[1]. A small process of its own: a child's peak as
# the kernel reports it includes the memory of the process it was forked from (here: this one, not pytest).
PEAK_LAUNCHER = """import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))"""


def _bounded_run(command: list[str], cwd: Path, env: dict, err_path: Path) -> tuple[int | None, int, float]:
    """(exit code, peak RSS in bytes, seconds) of one process; None when it ran past the bound (then killed)."""
    import signal
    import time

    started, peak = time.monotonic(), err_path.with_suffix(".rss")
    with err_path.open("w") as err:  # a file, not a pipe: a huge message cannot block the process
        proc = subprocess.Popen([sys.executable, "-c", PEAK_LAUNCHER, str(peak), *command], cwd=cwd, env=env,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        code = proc.wait(timeout=BOUNDS["seconds"])
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None, 0, time.monotonic() - started
    return code, int(peak.read_text()) * 1024, time.monotonic() - started  # Linux: kilobytes


def test_inputs_that_could_hang_or_exhaust_memory_stop_within_bounds(workspace, isolated, tmp_path):
    """Each as a process of its own (three at a time): one line, exit 2, within 60 s and 1 GB of peak memory
    (its whole run, Python and torch included); one that runs longer is killed and fails the test."""
    from concurrent.futures import ThreadPoolExecutor

    table = {c[0]: c for c in CASES}
    env = {**os.environ, "TMPDIR": str(isolated), "PYTHONPATH": str(REPO / "platform")}
    before = _tree_hash(workspace)
    commands = {}
    for case_id in BOUNDED_CASES:
        argv = _argv(table[case_id][1], workspace, free_port())
        commands[case_id] = ([sys.executable, "-m", "adaptnet.cli", *argv[1:]] if argv[0] == "adaptnet"
                             else [sys.executable, str(REPO / argv[0]), *argv[1:]])
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = {c: pool.submit(_bounded_run, command, workspace, env, tmp_path / f"{c}.err")
                for c, command in commands.items()}
    for case_id, future in runs.items():
        code, rss, seconds = future.result()
        assert code is not None, f"{case_id}: still running after {seconds:.0f} s"
        assert rss < BOUNDS["rss_bytes"], f"{case_id}: peak {rss / 2**20:.0f} MiB"
        _check(case_id, code, (tmp_path / f"{case_id}.err").read_text(), table[case_id][2], workspace, before, isolated)


def test_corpus_is_large_and_every_case_names_its_field():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
    assert {c[1][0] for c in CASES} >= {"adaptnet", "sweeps/exit_weights.py", "sweeps/ge_vs_baseline.py",
                                        "sweeps/adn_subpaths.py", "sweeps/kd_temperature.py"}
