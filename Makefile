# One-command workflows. Each target sets up what it needs in a virtual environment (.venv):
#   make demo    the main job: dissect a model whose ground truth is known (offline), report in demo-out/
#   make test    pinned dependencies, the build, the test suite
#   make bench   the kernel benchmarks (results in benchmarks/RESULTS.md)
# NEUROCORE_CUDA=auto|1|0 selects the CUDA kernels (auto: when torch has CUDA and nvcc is found).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv build demo test bench clean

$(VENV)/.installed: .ci/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r .ci/requirements.txt
	touch $@

venv: $(VENV)/.installed

build: venv
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .

demo: build
	$(VENV)/bin/neurocore demo --out demo-out

test: build
	$(PY) -m pytest python_tests

bench: build
	$(PY) benchmarks/bench_kernels.py --write
	$(PY) benchmarks/bench_linear.py --write
	$(PY) benchmarks/bench_dissect.py --write

clean:
	rm -rf build neurocore/_C*.so *.egg-info
