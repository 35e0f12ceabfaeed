"""Run records are immutable: the same config resumes, `train.epochs` may grow, anything else is refused,
and `--restart` archives (never deletes) the old run directory."""
import json

import pytest

from adaptnet.loop import load_config
from adaptnet.loop.preflight import RunRecordError, check_run_record, config_changes


def _cfg(tmp_path, *overrides):
    return load_config("cifar10-smoke", ["name=r", f"output_dir={tmp_path / 'runs'}", *overrides])


def _record(cfg):
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "config.json").write_text(cfg.model_dump_json())


def test_same_config_and_more_epochs_continue_anything_else_is_refused(tmp_path):
    _record(_cfg(tmp_path))
    assert check_run_record(_cfg(tmp_path)) is None
    assert check_run_record(_cfg(tmp_path, "train.epochs=9", "train.progress=false")) is None
    for override, field in (("optim.lr=0.5", "optim.lr"), ("train.epochs=1", "train.epochs"),
                            ("model.args={he_init: true}", "model.args"), ("data.holdout=10", "data.holdout")):
        with pytest.raises(RunRecordError, match=rf"^name: .* already holds a run with {field}=") as err:
            check_run_record(_cfg(tmp_path, override))
        assert "\n" not in str(err.value)
    with pytest.raises(RunRecordError, match="^train.resume: false would overwrite"):
        check_run_record(_cfg(tmp_path, "train.resume=false"))


def test_restart_archives_the_old_run_directory(tmp_path):
    old = _cfg(tmp_path)
    _record(old)
    (old.run_dir / "metrics.jsonl").write_text('{"epoch": 1}\n')
    archive = check_run_record(_cfg(tmp_path, "optim.lr=0.5"), restart=True)
    assert archive.name.startswith("r.archived-") and not old.run_dir.exists()
    assert json.loads((archive / "config.json").read_text())["optim"]["lr"] == old.optim.lr
    assert (archive / "metrics.jsonl").read_text() == '{"epoch": 1}\n'


def test_relative_and_absolute_paths_are_the_same_dataset(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    a = load_config("cifar10-smoke", ["name=r", "data.dataset=data"]).model_dump()
    b = load_config("cifar10-smoke", ["name=r", f"data.dataset={tmp_path / 'data'}"]).model_dump()
    assert config_changes(a, b) == []
