import subprocess
import sys
from pathlib import Path


def test_platform_folder_does_not_shadow_the_stdlib():
    repo = Path(__file__).resolve().parents[1]
    assert not (repo / "platform" / "__init__.py").exists()
    # Run from the repository root, where a `platform` package would win over the standard library.
    out = subprocess.run(
        [sys.executable, "-c", "import platform, adaptnet; print(platform.system(), platform.__file__, adaptnet.__file__)"],
        cwd=repo, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert out[0] == "Linux" or out[0] in ("Darwin", "Windows")
    assert "site-packages" in out[1] or "lib/python" in out[1]
    assert out[2].endswith("platform/adaptnet/__init__.py")


def test_models_losses_and_loop_do_not_import_ray_or_mlflow():
    code = ("import sys, adaptnet, adaptnet.loop, adaptnet.techniques, adaptnet.metrics, adaptnet.data, adaptnet.cli, "
            "adaptnet.deploy.bundle, adaptnet.deploy.subnet, adaptnet.deploy.preprocess; "
            "bad = [m for m in ('ray', 'mlflow') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
