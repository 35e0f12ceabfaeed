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


def _import_graph() -> tuple[dict[str, set[str]], dict[str, Path]]:
    """Every `import` of an adaptnet module, lazy (inside functions) ones included: {module: modules it imports}."""
    import ast

    root = Path(__file__).resolve().parents[1] / "platform"
    modules = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (root / "adaptnet").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                edges.add(target)
                edges.update(f"{target}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
        graph[name] = {e for e in edges if e in modules and e != name and not name.startswith(e + ".")}
    return graph, modules


def test_the_package_has_no_import_cycles():
    """The import graph, lazy imports included, is acyclic."""
    graph, modules = _import_graph()

    def cycle_from(start: str, at: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in sorted(graph[at]):
            if nxt == start:
                return seen + (nxt,)
            if nxt not in seen and nxt.startswith("adaptnet.") and (found := cycle_from(start, nxt, seen + (nxt,))):
                return found
        return None

    # package __init__ re-exports make parent ↔ child edges; only module-to-module cycles are errors
    leaves = [n for n, p in modules.items() if p.name != "__init__.py"]
    cycles = [c for n in leaves if (c := cycle_from(n, n, (n,))) and all(modules[m].name != "__init__.py" for m in c)]
    assert not cycles, cycles[0]


def test_cluster_rooms_are_layered_sweep_run_tracking():
    """cluster/ is three rooms: sweep may import run and tracking, run may import tracking, tracking neither."""
    graph, _ = _import_graph()
    rank = {"adaptnet.cluster.tracking": 0, "adaptnet.cluster.run": 1, "adaptnet.cluster.sweep": 2}

    def room(module: str) -> str | None:
        return next((r for r in rank if module == r or module.startswith(r + ".")), None)

    upward = [(src, dst) for src, targets in graph.items() for dst in targets
              if room(src) and room(dst) and rank[room(dst)] > rank[room(src)]]
    assert not upward, upward
    assert all(room(m) or m.count(".") < 3 for m in graph if m.startswith("adaptnet.cluster.")), "a module outside the rooms"


def test_gpu_check_without_cuda_says_so_in_one_line_and_succeeds():
    import os

    done = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py")],
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().splitlines() == [
        "gpu_check: needs a CUDA GPU (none visible here); nothing measured"], done.stdout + done.stderr


def test_mlflow_can_record_gpu_metrics_where_a_gpu_is():
    """NVML's bindings are installed, so MLflow's GPU monitor starts on a GPU node; here (no GPU, no driver) it
    fails to start, which MLflow takes as "no GPU" (system metrics without GPU rows), not as an error."""
    import pynvml
    from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor

    assert hasattr(pynvml, "nvmlDeviceGetUtilizationRates")
    try:
        GPUMonitor()
    except RuntimeError as err:  # NVML finds no driver
        assert "skip logging GPU metrics" in str(err)
