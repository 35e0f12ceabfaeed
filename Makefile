# The two commands of README.md. Both (re)create .venv when it is missing or requirements changed.
VENV   := .venv
PY     := $(VENV)/bin/python
PYTHON ?= python3
# Offline, the real CIFAR-10 JPEG mirror next to the checkout is used; elsewhere torchvision downloads it.
CIFAR_MIRROR := ../shared/data/cifar10-jpeg.tar.gz
DATASET ?= $(if $(wildcard $(CIFAR_MIRROR)),$(CIFAR_MIRROR),cifar10)
export ADAPTNET_DATASET := $(DATASET)

.PHONY: demo test bench clean postgresql

$(VENV)/.installed: requirements.txt platform/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# The main job: baseline vs GE vs IMTA, paired seeds, on a local Ray, tracked in ./mlflow.db. Rerunning resumes.
demo: $(VENV)/.installed
	$(PY) sweeps/ge_vs_baseline.py --preset cpu --dataset $(DATASET) --storage runs/sweeps --tracking-uri sqlite:///mlflow.db

test: $(VENV)/.installed postgresql
	$(PY) -m pytest -q tests

# The tracking-store tests start a real PostgreSQL: Debian's server binaries, installed when missing (CI is root).
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update && apt-get install -y postgresql; }

bench: $(VENV)/.installed
	for script in bench/*.py; do $(PY) $$script || exit 1; done

clean:
	rm -rf runs .pytest_cache
