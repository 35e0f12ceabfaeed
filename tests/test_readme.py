"""Every command of README.md runs as written on a fresh offline machine with ../shared present.

Fresh: HOME and ADAPTNET_CACHE in a temporary folder, no ADAPTNET_*/AWS_*/proxy variables, the commands run
in an empty folder. Offline: inside a network namespace with only loopback (`unshare -n`) where that is
allowed, else through a dead proxy. Training commands get a tiny override appended (later overrides win);
commands that need a GPU cluster or AWS are listed with the reason they are not run here.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from adaptnet.data.resolve import VENV_RECORD

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared" / "data"
TINY = ["train.epochs=1", "data.train_subset=128", "data.holdout=64", "data.test_subset=128", "train.progress=false"]
# How each README command runs here: extra arguments (a tiny size) or the reason it does not.
EXTRA = {
    ".venv/bin/adaptnet train cifar10-smoke": TINY,
    ".venv/bin/adaptnet train cifar10-imta": TINY,
    ".venv/bin/adaptnet train cifar10-resnet56-adn": TINY,
    ".venv/bin/adaptnet train my.yaml name=my-run train.epochs=10 optim.lr=0.05": TINY,
    ".venv/bin/python sweeps/ge_vs_baseline.py --preset smoke": ["--arms", "baseline,ge"],  # 2 seeds: 4 trials
    ".venv/bin/python sweeps/ge_vs_baseline.py --preset smoke --seeds 1 --arms baseline,ge,ge-isc,isc-kd,imta "
    "--name imta-ablation": [],  # IMTA's ablation, 5 trials
    ".venv/bin/python sweeps/adn_vs_individual.py --preset smoke": [],  # 4 arms × 2 seeds, 8 stages trained
    ".venv/bin/python sweeps/adn_vs_individual.py --preset paper-resnet50 --dry-run": [],  # plans, starts nothing
}
HELP_ONLY = {  # sweeps that cost a minute each here: the smoke one above runs the same script and machinery
    ".venv/bin/python sweeps/ge_vs_baseline.py --preset cpu --seeds 5",
    ".venv/bin/python sweeps/kd_temperature.py --preset smoke",
    ".venv/bin/python sweeps/exit_weights.py --scheme power --search-ge",
    ".venv/bin/python sweeps/adn_subpaths.py --preset smoke",
}
SERVE = "tests/cluster/test_export.py exports, serves and queries a real model the same way"
NOT_HERE = {
    ".venv/bin/adaptnet export runs/x/checkpoints/best.pt --budget 20e6,40e6 --out model": SERVE,
    ".venv/bin/adaptnet export runs/adn/checkpoints/best.pt --skip TFT --out model": SERVE,
    "PATH=.venv/bin:$PATH .venv/bin/mlflow models serve -m model --env-manager local -p 5001": SERVE,
    "curl -s localhost:5001/invocations -H 'Content-Type: application/json' -d '{\"dataframe_split\": "
    "{\"columns\": [\"image\"], \"data\": [[\"<base64 JPEG>\"]]}, \"params\": {\"budget\": 30e6}}'": SERVE,
    ".venv/bin/python clusters/aws_setup.py --dry-run": "reads clusters/ of the checkout; test_cluster_files.py runs it",
    ".venv/bin/python clusters/aws_setup.py": "needs AWS; tests/clusters/test_cluster_files.py runs it on moto_server",
    "make demo": "builds .venv and runs the 12-minute demo (make test runs this file)",
    "make test": "is what runs this file",
    ".venv/bin/adaptnet train cifar100-paper --workers 4 --gpus-per-worker 1 --address auto --storage s3://bucket/runs":
        "needs a Ray cluster with 4 GPUs and an S3 bucket",
}


def readme_commands() -> list[str]:
    """The command lines of README.md's bash blocks (comments stripped, continuation lines joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    commands = []
    for block in blocks:
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            command = re.sub(r"\s+", " ", line.split("#", 1)[0]).strip().rstrip("&").strip()
            if command:
                commands.append(command)
    return commands


def offline_env(tmp: Path, tmpdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ADAPTNET_", "AWS_", "RAY_", "MLFLOW_")) and "proxy" not in k.lower()}
    env.update(HOME=str(tmp / "home"), ADAPTNET_CACHE=str(tmp / "cache"), PYTHONPATH=str(REPO / "platform"),
               TMPDIR=str(tmpdir))
    if not (Path(sys.prefix) / VENV_RECORD).is_file():  # what `make`'s install records in .venv
        env["ADAPTNET_DATA_DIR"] = str(DATA_DIR)
    for folder in ("home", "cache"):
        (tmp / folder).mkdir(exist_ok=True)
    return env


def can_cut_network() -> bool:
    return bool(shutil.which("unshare")) and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def run_offline(command: str, extra: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    argv = shlex.split(command) + extra
    if argv[0].startswith(".venv/bin/"):
        argv[0] = str(Path(sys.executable).parent / argv[0].removeprefix(".venv/bin/"))
    if can_cut_network():  # a namespace with only loopback (Ray and MLflow use it)
        argv = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]
    else:
        env = {**env, **{k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """An empty working folder (with the checkout's sweeps/ and a my.yaml) and a fresh offline environment."""
    if not (DATA_DIR / "cifar10-jpeg.tar.gz").exists():
        pytest.skip("the README promises offline runs only with ../shared/data present")
    tmp = tmp_path_factory.mktemp("readme")
    work = tmp / "work"
    work.mkdir()
    (work / "sweeps").symlink_to(REPO / "sweeps")
    shutil.copyfile(REPO / "platform" / "adaptnet" / "configs" / "cifar10-smoke.yaml", work / "my.yaml")
    # A short TMPDIR, as a user's /tmp: Ray's socket paths under it must stay within AF_UNIX's 107 bytes.
    tmpdir = Path(tempfile.mkdtemp(prefix="rd-", dir="/tmp"))
    try:
        yield work, offline_env(tmp, tmpdir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def test_every_readme_command_is_run_or_has_a_reason():
    known = set(EXTRA) | HELP_ONLY | set(NOT_HERE)
    commands = readme_commands()
    assert [c for c in commands if not c.startswith(".venv/bin/") and c not in known
            and not c.startswith(("ray ", "RAY_AUTH_MODE=", "python sweeps/"))] == []
    assert not set(EXTRA) - set(commands), "a command of this test is no longer in README.md"


# README commands that read what an earlier one wrote (matched by substring): they run after it.
READS_FROM = {"adaptnet evaluate runs/cifar10-smoke/": "adaptnet train cifar10-smoke",
              "data.dataset=shards/cifar10": "adaptnet data shard cifar10 shards/cifar10"}


def command_chains(commands: list[str]) -> list[list[str]]:
    """The commands as independent chains (README order inside a chain): a reader joins its writer's chain."""
    chains: list[list[str]] = []
    for command in commands:
        writer = next((w for r, w in READS_FROM.items() if r in command), None)
        home = next((c for c in chains if writer and any(writer in done for done in c)), None)
        if writer and home is None:
            raise AssertionError(f"{command}: the command it reads from ({writer}) is not before it in README.md")
        (home.append(command) if home else chains.append([command]))
    return chains


def test_using_it_commands_run_offline_as_written(fresh):
    from concurrent.futures import ThreadPoolExecutor

    work, env = fresh
    cli = [c for c in readme_commands() if c.startswith(".venv/bin/adaptnet") and c not in NOT_HERE]
    assert any("train cifar10-smoke" in c for c in cli) and any(" evaluate " in c for c in cli)
    snippet = re.search(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    python = "the README's Python snippet"
    how = {c: (c, EXTRA.get(c, [])) for c in cli}  # label → (command line, extra arguments)
    how[python] = (".venv/bin/python", ["-c", "import torch; x = torch.randn(2, 3, 32, 32)\n" + snippet])

    def run_chain(chain: list[str], env: dict[str, str] = env) -> list[tuple[str, subprocess.CompletedProcess]]:
        done = []
        for label in chain:
            done.append((label, run_offline(*how[label], work, env)))
            if done[-1][1].returncode:
                break
        return done

    chains = command_chains(cli) + [[python]]
    first = next(c for c in chains if any(" train " in label for label in c))
    finished = run_chain(first)  # alone: the first training command decodes CIFAR-10 into the fresh cache
    # then two at a time (most of a command is Python's start-up), one thread each: two commands of 2 threads on
    # 2 cores make OpenMP's threads wait on each other
    side_by_side = {**env, "OMP_NUM_THREADS": "1"}
    with ThreadPoolExecutor(max_workers=2) as pool:
        finished += [run for chain in pool.map(lambda chain: run_chain(chain, side_by_side),
                                               [c for c in chains if c is not first]) for run in chain]
    for command, done in finished:
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert len(finished) == len(cli) + 1
    saved = (work / "runs" / "cifar10-smoke" / "config.json").read_text()
    assert "cifar10-jpeg.tar.gz" in saved  # the mirror, not a download


@pytest.mark.parametrize("command", [c for c in readme_commands() if "sweeps/" in c and c.startswith(".venv")])
def test_sweep_commands_run_offline(fresh, command):
    work, env = fresh
    extra = EXTRA.get(command, ["--help"] if command in HELP_ONLY else None)
    assert extra is not None, f"{command}: say how this test runs it"
    done = run_offline(command, extra, work, env)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    if "ge-isc" in command:  # IMTA's ablation: 5 trials, 8 stages, the 3 stage-1 runs equal to a one-stage arm's
        assert "stages trained: 5; reused from storage instead of training again: 3" in done.stdout, done.stdout[-3000:]
        for arm in ("baseline", "ge", "ge-isc", "isc-kd", "imta"):  # every arm's row of the last exit
            assert re.search(rf"^exit5\s+{arm}\s+1\s", done.stdout, re.M), done.stdout[-3000:]
        assert_quiet(done.stdout + done.stderr)
    elif "--dry-run" in command:
        assert re.search(r"^compute: [\d,]+ GPU-hours on A10G", done.stdout, re.M) and " USD " in done.stdout
    elif "adn_vs_individual" in command:
        assert_adn_comparison(done.stdout, work / "mlflow.db")
        assert_quiet(done.stdout + done.stderr)
    elif "--help" not in extra:  # what a person follows: progress, what the seeds can detect, a plain verdict
        assert re.search(r"trial [1-4]/4, arm ge, seed 1: started", done.stdout), done.stdout[-3000:]
        assert re.search(r"\| sweep: 4/4 epochs, \d+m\d\ds elapsed, ~0m00s left", done.stdout), done.stdout[-3000:]
        assert "detectable |Δ|" in done.stdout and "t(0.975, n−1)·s_d/√n" in done.stdout
        # CIFAR-10 subsets for 1 epoch: no published number applies, and the output says so instead of comparing
        assert "no paper comparison: dataset cifar10 (the reference: imagenet-1k)" in done.stdout
        assert re.search(r"^(No arm differs from baseline at 95%|Differs from the baseline at 95%)", done.stdout, re.M)
        assert re.search(r"^Detecting 1 point at this spread would take \d+ to \d+ paired seeds|over 1000", done.stdout, re.M)
        assert re.search(r"then http://127\.0\.0\.1:5000/#/experiments/\d+/runs\?workflowType=machine_learning"
                         r"&viewStateShareKey=\w+\)", done.stdout), done.stdout[-500:]  # the runs grouped by arm
        assert_quiet(done.stdout + done.stderr)


def assert_adn_comparison(stdout: str, store: Path) -> None:
    """Super against the individually trained network, base against the base-depth one and its KD twin, each with
    a paired Δ and CI; kd-individual's stage 1 is the individual arm's run; the table is on the MLflow parent."""
    from adaptnet.cluster.tracking.store import client

    for depth, arm in (("super", "adn"), ("base", "adn"), ("base", "kd-individual")):
        assert re.search(rf"^{depth}\s+{arm}\s+2\s+[\d.]+ ± [\d.]+\s+[+-][\d.]+\s+\[[+-][\d.]+, [+-][\d.]+\]", stdout,
                         re.M), stdout[-3000:]
    for depth, arm in (("super", "individual"), ("base", "individual-base")):
        assert re.search(rf"^{depth}\s+{arm}\s+2\s+[\d.]+ ± [\d.]+\s*$", stdout, re.M)  # the baseline row
    assert "stages trained: 8; reused from storage instead of training again: 2" in stdout
    assert "no paper comparison: dataset cifar10 (the reference: imagenet-1k); model resnet56_adn (the reference: " \
           "resnet50_adn)" in stdout
    tracker = client(f"sqlite:///{store}")
    (parent,) = tracker.search_runs([tracker.get_experiment_by_name("adaptnet-sweeps").experiment_id],
                                    "attributes.run_name = 'adn_vs_individual-smoke'")
    assert {"cmp/super/adn/delta", "cmp/base/kd-individual/delta"} <= set(parent.data.metrics), sorted(parent.data.metrics)
    assert "comparison.md" in {a.path for a in tracker.list_artifacts(parent.info.run_id)}


def assert_quiet(terminal: str) -> None:
    """What a user's terminal shows of a sweep: adaptnet's lines, no INFO chatter of Ray, Tune or MLflow, no
    download bars, no pickling warning (the lines are in the Ray session's logs folder)."""
    chatter = [line for line in terminal.splitlines()
               if re.search(r"\bINFO\b|Downloading artifacts|CloudPickle|View detailed results|"
                            r"Configuration for experiment|tensorboard --logdir", line)]
    assert not chatter, chatter[:5]
