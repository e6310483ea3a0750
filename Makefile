# One-command workflows. Each target sets up what it needs in a virtual environment (.venv):
#   make demo    the main job: dissect a model whose ground truth is known (offline), report in demo-out/
#   make test    pinned dependencies, the build, the test suite
#   make bench   benchmark suites (pytest-benchmark) and scripts; results in benchmarks/RESULTS.md
# NEUROCORE_CUDA=auto|1|0 selects the CUDA kernels (auto: when torch has CUDA and nvcc is found).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
NEUROCORE_CUDA ?= auto
# What the compiled extension depends on. Python sources are not here: the editable install reads them
# in place. Bytecode caches are left out (importing cmake/build_config.py writes one during the build).
BUILD_INPUTS := setup.py pyproject.toml $(shell find csrc cmake -type f -not -path '*/__pycache__/*' -not -name '*.pyc')
# One stamp per NEUROCORE_CUDA setting: switching it rebuilds, repeating a target does not.
BUILT := $(VENV)/.built-cuda-$(NEUROCORE_CUDA)

.PHONY: venv build demo test bench clean

$(VENV)/.installed: .ci/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r .ci/requirements.txt
	touch $@

venv: $(VENV)/.installed

# The extension is compiled only when a build input changed since the last build (make demo, then
# make test, compiles once).
$(BUILT): $(VENV)/.installed $(BUILD_INPUTS)
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	rm -f $(VENV)/.built-cuda-*
	touch $@

build: $(BUILT)

demo: build
	$(VENV)/bin/neurocore demo --out demo-out

test: build
	$(PY) -m pytest python_tests

bench: build
	$(PY) -m pytest benchmarks --benchmark-only --benchmark-autosave --benchmark-results -q
	$(PY) benchmarks/bench_kernels.py --write
	$(PY) benchmarks/bench_record.py --write
	$(PY) benchmarks/bench_linear.py --write
	$(PY) benchmarks/bench_dissect.py --write

clean:
	rm -rf build neurocore/_C*.so *.egg-info $(VENV)/.built-cuda-*
