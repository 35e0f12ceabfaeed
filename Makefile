# The two commands of README.md. Both (re)create .venv when it is missing or requirements changed.
VENV   := .venv
PY     := $(VENV)/bin/python
PYTHON ?= python3
# Offline data next to the checkout; `cifar10`/`cifar100` resolve to <DATA_DIR>/<name>-jpeg.tar.gz when it
# exists (adaptnet/data/resolve.py). The install records it in .venv, so `.venv/bin/adaptnet` finds it too.
DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)
export ADAPTNET_DATA_DIR := $(DATA_DIR)
# `make demo DATASET=<spec>` (and `make test DATASET=<spec>`) replace the default dataset, cifar10.
ifdef DATASET
export ADAPTNET_DATASET := $(DATASET)
endif

.PHONY: demo test bench clean data-dir postgresql

$(VENV)/.installed: requirements.txt platform/pyproject.toml
	@echo "== creating $(VENV) with $(PYTHON) (once; reused until requirements.txt changes)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "== installing the pinned packages of requirements.txt (torch, Ray, MLflow, ...: ~3 min the first time)"
	$(PY) -m pip install --progress-bar off -r requirements.txt
	$(PY) -c "import adaptnet, torch, ray, mlflow; print('== installed: torch', torch.__version__, '| ray', ray.__version__, '| mlflow', mlflow.__version__)"
	touch $@

# Where `.venv/bin/adaptnet` and the sweep scripts look for dataset mirrors when ADAPTNET_DATA_DIR is unset.
data-dir: $(VENV)/.installed
	@echo "ADAPTNET_DATA_DIR=$(DATA_DIR)" > $(VENV)/adaptnet.env
	@echo "== data dir: $(if $(DATA_DIR),$(DATA_DIR),none: cifar10 is downloaded by torchvision) (recorded in $(VENV)/adaptnet.env)"

# The main job: baseline vs GE vs IMTA, paired seeds, on a local Ray, tracked in ./mlflow.db. Rerunning resumes.
demo: data-dir
	RAY_DEDUP_LOGS=0 $(PY) sweeps/ge_vs_baseline.py --preset cpu --storage runs/sweeps --tracking-uri sqlite:///mlflow.db

test: data-dir postgresql
	$(PY) -m pytest -q --durations=15 tests

# The tracking-store tests start a real PostgreSQL: Debian's server binaries, installed when missing (CI is root).
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update && apt-get install -y postgresql; }

bench: data-dir
	for script in bench/*.py; do $(PY) $$script || exit 1; done

clean:
	rm -rf runs .pytest_cache
