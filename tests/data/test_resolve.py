from pathlib import Path

from adaptnet.data.resolve import VENV_RECORD, resolve_dataset_spec


def test_named_datasets_resolve_to_the_mirror_of_the_data_dir(tmp_path):
    (tmp_path / "data").mkdir()
    mirror = tmp_path / "data" / "cifar10-jpeg.tar.gz"
    mirror.write_bytes(b"")
    env = {"ADAPTNET_DATA_DIR": str(tmp_path / "data")}
    assert resolve_dataset_spec("cifar10", env, prefix=str(tmp_path)) == str(mirror)
    assert resolve_dataset_spec("CIFAR10", env, prefix=str(tmp_path)) == str(mirror)
    assert resolve_dataset_spec("cifar100", env, prefix=str(tmp_path)) == "cifar100"  # no mirror: torchvision's
    assert resolve_dataset_spec("s3://b/cifar10", env, prefix=str(tmp_path)) == "s3://b/cifar10"
    assert resolve_dataset_spec("cifar10", {}, prefix=str(tmp_path)) == "cifar10"  # no data dir at all


def test_the_venv_record_is_the_data_dir_when_the_environment_names_none(tmp_path):
    (tmp_path / "venv").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar100-jpeg.tar.gz").write_bytes(b"")
    (tmp_path / "venv" / VENV_RECORD).write_text(f"ADAPTNET_DATA_DIR={tmp_path / 'data'}\n")
    found = resolve_dataset_spec("cifar100", {}, prefix=str(tmp_path / "venv"))
    assert Path(found) == tmp_path / "data" / "cifar100-jpeg.tar.gz"
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert resolve_dataset_spec("cifar100", {"ADAPTNET_DATA_DIR": str(other)}, prefix=str(tmp_path / "venv")) == "cifar100"
    (tmp_path / "venv" / VENV_RECORD).write_text("ADAPTNET_DATA_DIR=\n")  # make found no data dir
    assert resolve_dataset_spec("cifar100", {}, prefix=str(tmp_path / "venv")) == "cifar100"
