"""`--dry-run` of every paper preset of every sweep script: the plan and its compute (GPU-hours, USD), with
nothing started (no Ray) and nothing written."""
import importlib.util
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _paper_presets() -> list[tuple[str, str]]:
    found = []
    for script in sorted((REPO / "sweeps").glob("*.py")):
        spec = importlib.util.spec_from_file_location(script.stem, script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # the scripts run only under __main__
        found += [(script.name, name) for name in module.PRESETS if name.startswith("paper-")]
    return found


def test_every_paper_preset_of_every_script_plans_its_compute_and_starts_nothing(tmp_path):
    cases = _paper_presets()
    assert {s for s, _ in cases} == {p.name for p in (REPO / "sweeps").glob("*.py")}  # every script has one
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "ADAPTNET_STORAGE"))}

    def dry_run(case):
        script, preset = case
        work = tmp_path / f"{script}-{preset}"
        work.mkdir()
        done = subprocess.run([sys.executable, str(REPO / "sweeps" / script), "--preset", preset, "--dry-run"],
                              cwd=work, env={**env, "RAY_TMPDIR": str(work / "ray")}, capture_output=True, text=True,
                              timeout=300)
        return case, work, done

    with ThreadPoolExecutor(max_workers=2) as pool:
        for (script, preset), work, done in pool.map(dry_run, cases):
            assert done.returncode == 0, done.stderr[-2000:]
            out = done.stdout
            trials = re.search(r"^trials: (\d+)", out, re.M)
            hours = re.search(r"^compute: ([\d,]+) GPU-hours on A10G", out, re.M)
            usd = re.search(r"^cost: [\d,]+ (g5\.\w+) instance-hours × \$[\d.]+/h = ([\d,]+) USD", out, re.M)
            assert trials and hours and usd, out
            assert int(hours.group(1).replace(",", "")) > 0 and int(usd.group(2).replace(",", "")) > 0
            print(f"{script} --preset {preset}: {trials.group(1)} trials, {hours.group(1)} GPU-hours, "
                  f"{usd.group(2)} USD on {usd.group(1)}")
            assert list(work.iterdir()) == [], (script, preset)  # no mlflow.db, no ray_results, no Ray session


@pytest.mark.parametrize("script", ["ge_vs_baseline.py", "adn_vs_individual.py"])
def test_a_cpu_preset_plans_no_gpu_and_counts_the_shared_stages(script, tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "sweeps" / script), "--preset", "smoke", "--dry-run"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    shared = {"ge_vs_baseline.py": "stages: 8, of which 6 are trained",  # IMTA's stage 1 is the GE arm's run
              "adn_vs_individual.py": "stages: 10, of which 8 are trained"}  # kd-individual's is individual's
    assert shared[script] in done.stdout and "0 GPU-hours" in done.stdout
    assert list(tmp_path.iterdir()) == []
