# Two entry points: `make run` and `make test`. Both set up .venv first (idempotent).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ARTIFACTS := artifacts
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run test lint clean

setup: $(STAMP)

# torch is pinned and installed first: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml CMakeLists.txt $(wildcard csrc/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12"
	$(PY) -m pip install -q --no-build-isolation -e ".[export,spark,openvino,perf,test]"
	touch $(STAMP)

# The main job: the embedded default model (assembled into ~/.cache/nertron at first use) served by a
# real Triton server: sample texts through the gRPC client, entities, batching statistics, then stop.
run: setup
	$(PY) -m nertron.demo

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check sdk export tests perf

clean:
	rm -rf build $(ARTIFACTS) .pytest_cache
