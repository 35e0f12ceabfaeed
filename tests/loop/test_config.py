import subprocess
import sys

import pytest

from adaptnet.loop import ConfigError, build_config, load_config, preset_names


def test_presets_ship_and_validate():
    assert {"cifar10-smoke", "cifar100-paper", "imagenet-paper"} <= set(preset_names())
    paper = load_config("cifar100-paper")
    assert (paper.train.epochs, paper.train.batch_size, paper.optim.lr, paper.optim.weight_decay) == (300, 64, 0.1, 1e-4)
    assert paper.optim.schedule == "multistep" and paper.optim.nesterov is False
    assert paper.data.dataset == "cifar100" and paper.data.holdout == 5000
    imagenet = load_config("imagenet-paper")
    assert (imagenet.train.epochs, imagenet.train.batch_size, imagenet.data.holdout) == (90, 256, 50_000)


def test_overrides_are_parsed_as_yaml():
    cfg = load_config("cifar10-smoke", ["train.epochs=5", "model.args.he_init=true", "train.exit_weights=linear"])
    assert cfg.train.epochs == 5 and cfg.model.args == {"he_init": True} and cfg.train.exit_weights == "linear"


@pytest.mark.parametrize("override,field", [
    ("optim.lr=-0.1", "optim.lr"),
    ("train.epochs=0", "train.epochs"),
    ("train.epochz=3", "train.epochz"),
    ("train.batch_size=many", "train.batch_size"),
    ("optim.schedule=linear", "optim.schedule"),
    ("optim.milestones=[0.8,0.2]", "optim.milestones"),
    ("model.name=resnet9000", "model.name"),
    ("model.args.bogus=1", "model.args.bogus"),
    ("model.args.stepmode=odd", "model.args"),
    ("train.exit_weights=[1,1]", "train.exit_weights"),
    ("train.exit_weights=[0,0,0,0,0,0,0]", "train.exit_weights"),
    ("train.exit_weights=[1,1,1,1,1,1,-1]", "train.exit_weights"),
    ("data.holdout=-5", "data.holdout"),
    ("name=has space", "name"),
])
def test_bad_values_give_one_line_naming_the_field(override, field):
    with pytest.raises(ConfigError) as err:
        load_config("cifar10-smoke", [override])
    message = str(err.value)
    assert message.startswith(field) and "\n" not in message


def test_missing_section_is_named():
    with pytest.raises(ConfigError, match="^train: Field required"):
        build_config({"name": "x", "data": {"dataset": "cifar10"}})


def test_cli_exits_2_with_the_field_before_any_work(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ndata: {dataset: cifar10}\ntrain: {epochs: 2, lr: 0.1}\n")
    result = subprocess.run([sys.executable, "-m", "adaptnet.cli", "train", str(bad), f"output_dir={tmp_path}"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "adaptnet: error: train.lr: Extra inputs are not permitted (got 0.1)"
    assert not (tmp_path / "bad").exists()


def test_a_models_config_check_builds_the_model_once_per_process():
    """A sweep builds one config per trial: the model check (class, exit count) is built once per model config,
    and a config with other model args is checked on its own model."""
    from adaptnet.loop.config import _model_facts

    load_config("cifar10-smoke")
    before = _model_facts.cache_info()
    load_config("cifar10-smoke", ["name=another-trial", "optim.lr=0.05"])
    assert _model_facts.cache_info().hits == before.hits + 1 and _model_facts.cache_info().misses == before.misses
    with pytest.raises(ConfigError, match="train.exit_weights: msdnet_cifar_anytime has 3 exits, got 2 weights"):
        load_config("cifar10-smoke", ["model.args={n_blocks: 3}", "train.exit_weights=[1, 1]"])
