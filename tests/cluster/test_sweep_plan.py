"""`--dry-run` of every paper preset of every sweep script: the plan and its compute (GPU-hours, USD), with
nothing started (no Ray) and nothing written."""
import importlib.util
import os
import re
import runpy
import sys
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


def _dry_run(script: str, preset: str, monkeypatch, capsys) -> str:
    """The script run as `python sweeps/<script> --preset <preset> --dry-run`, in this process (no start-up)."""
    monkeypatch.setattr(sys, "argv", [script, "--preset", preset, "--dry-run"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO / "sweeps" / script), run_name="__main__")
    out = capsys.readouterr()
    assert done.value.code == 0, out.err[-2000:]
    return out.out


def test_every_paper_preset_of_every_script_plans_its_compute_and_starts_nothing(tmp_path, monkeypatch, capsys):
    cases = _paper_presets()
    assert {s for s, _ in cases} == {p.name for p in (REPO / "sweeps").glob("*.py")}  # every script has one
    for name in [k for k in os.environ if k.startswith(("RAY_ADDRESS", "MLFLOW_", "ADAPTNET_STORAGE"))]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    for script, preset in cases:
        out = _dry_run(script, preset, monkeypatch, capsys)
        trials = re.search(r"^trials: (\d+)", out, re.M)
        hours = re.search(r"^compute: ([\d,]+) GPU-hours on A10G", out, re.M)
        usd = re.search(r"^cost: [\d,]+ (g5\.\w+) instance-hours × \$[\d.]+/h = ([\d,]+) USD", out, re.M)
        assert trials and hours and usd, out
        assert int(hours.group(1).replace(",", "")) > 0 and int(usd.group(2).replace(",", "")) > 0
        with capsys.disabled():
            print(f"\n{script} --preset {preset}: {trials.group(1)} trials, {hours.group(1)} GPU-hours, "
                  f"{usd.group(2)} USD on {usd.group(1)}", end="")
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no ray_results
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()  # no Ray started


@pytest.mark.parametrize("script", ["ge_vs_baseline.py", "adn_vs_individual.py"])
def test_a_cpu_preset_plans_no_gpu_and_counts_the_shared_stages(script, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = _dry_run(script, "smoke", monkeypatch, capsys)
    shared = {"ge_vs_baseline.py": "stages: 8, of which 6 are trained",  # IMTA's stage 1 is the GE arm's run
              "adn_vs_individual.py": "stages: 10, of which 8 are trained"}  # kd-individual's is individual's
    assert shared[script] in out and "0 GPU-hours" in out
    assert list(tmp_path.iterdir()) == []
