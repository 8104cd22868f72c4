# lenet-keras: every target creates .venv first if it is missing (python3 -m venv, the pinned
# requirements, then this package in editable mode).
#   make mnist [EPOCHS=3] [ARGS="seed=7 train.batch_size=256"]   train LeNet-5 on MNIST + report
#     SEEDS="0 1 2" (mnist, cifar, cifar-fast): one run per seed, seeds already completed skipped
#   make cifar [EPOCHS=2] [DATA=folder] [ARGS=...]                 the CIFAR-10 notebook's CNN + report
#     both continue the last unfinished run of the same config (killed, Ctrl-C) from its last
#     completed epoch; RESUME= (empty) always starts a new run
#   make scratch [EPOCHS=3] [ARGS=...]                             the NumPy LeNet-5, deck recipe, + report
#   make report [EXPERIMENT=mnist_lenet5]                           re-render a report from runs/
#   make compare [EXPERIMENTS="mnist_lenet5 mnist_lenet5_fast"] [ARGS="--where engine=keras"]
#                                                                   one report over several experiments' runs
#   make figures [SEEDS="0 1 2"] [PEERS=dir]                        the README's MNIST comparison (runs/figures/,
#                                                                   trains what is missing) -> reports/compare-mnist/
#   make reproduce                                                  the reproduction scorecard -> reports/reproduction/
#   make lenet1998 [SEEDS="0 1 2"]                                  LeCun et al. 1998's LeNet-5 without and with distortions
#                                                                   (runs/reproduction/, scored by make reproduce) + reports
#   make sweep [SWEEP=experiments/mnist_lenet5_grid.toml] [WORKERS=2]  grid/Optuna sweep + report
#   make bench [ARGS="--repeats 3"]                                speed of both models (python -m lenet_keras bench);
#     a workload without its data is skipped with one line saying what is missing and how to get it
#     ARGS="--workloads lenet5_tiny --precisions fp32": a smoke test of seconds
#     ARGS="--peers ..." runs python -m benchmarks.bench_peers instead: also the seeds' scripts (PEERS)
#   make cifar-fast [DATA=folder] [EPOCHS=..]                       airbench94's recipe in Keras + report
#   make cifar-fast-bench [SEEDS="0 1 2"] [DATA=folder] [PEERS=dir]  it side by side with airbench94 (PyTorch)
#   make lenet-side-by-side [SEEDS="0 1 2"] [ARGS="--experiments mnist_lenet5_fast"]  (default: quick, wide, wide_bn)
#                                                                   our LeNet-5 recipes vs the deck's code, whole commands
#   make crash-drill [ARGS="--kills 3"]                             SIGKILL make mnist, resume, compare
#   make peers-venv [TORCH_INDEX=url]                               .venv-peers: the CPU build of PyTorch 2.13.0 (checked
#                                                                   and printed) and airbench, for the peer scripts
#   PEERS=dir (figures, lenet-side-by-side, cifar-fast-bench, bench ARGS=--peers): the seeds' scripts, other
#     people's programs (default ../shared/peers when it exists; PEERS= runs without). Each tool checks what its
#     run needs (scripts, .venv-peers' torch, data) before training: one line on what is missing, exit 2;
#     without peers, figures and lenet-side-by-side run ours and say that the peers were left out
#   (benchmarks/: development tools run from this checkout, not part of the installed package)
#   make tensorboard [PORT=6006] [RUNS=runs/<sweep>]                TensorBoard (HParams tab for sweeps)
#   make test                                                       the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXPERIMENT ?= mnist_lenet5
PORT ?= 6006
SWEEP ?= experiments/mnist_lenet5_grid.toml
WORKERS ?= 1
RUNS ?= runs
REPORTS ?= reports
RESUME ?= --resume
# train.epochs=N when EPOCHS is given; ARGS are passed through (overrides, --data-dir ...)
OVERRIDES = $(if $(EPOCHS),train.epochs=$(EPOCHS)) $(ARGS)
# SEEDS="0 1 2": one run per seed (train --seeds, after the overrides)
SEEDS ?=
SEED_RUNS = $(if $(SEEDS),--seeds $(SEEDS))
EXPERIMENTS ?= mnist_lenet5 mnist_lenet5_fast

# the seeds' scripts (other people's programs, run by benchmarks/, never by the package): ../shared/peers
# when it exists; PEERS= (empty) runs the tools without them (--peers-dir none)
PEERS ?= $(wildcard ../shared/peers)
PEERS_DIR = --peers-dir $(or $(PEERS),none)
# make peers-venv TORCH_INDEX=https://download.pytorch.org/whl/cpu where pip's torch is a CUDA build
TORCH_INDEX ?=

# make cifar DATA=folder: train on an image folder (train/<class>/*, test/<class>/*) instead
# of the official archive, e.g. DATA=../shared/datasets/cifar10-jpeg (a JPEG copy, not CIFAR-10)
CIFAR_DATA = $(if $(DATA),data.dataset=image_folder data.path=$(DATA))

.PHONY: help venv lenet1998 mnist cifar cifar-fast cifar-fast-bench crash-drill scratch report compare figures reproduce lenet-side-by-side sweep bench peers-venv tensorboard test clean-venv

help:
	@sed -n '1,/^PYTHON/p' Makefile | grep '^#' | sed 's/^# \{0,1\}//'

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	# --no-deps: requirements.txt already pinned everything (tensorflow-cpu satisfies it)
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

mnist: $(STAMP)
	$(PY) -m lenet_keras train experiments/mnist_lenet5.toml $(OVERRIDES) $(SEED_RUNS) --runs-dir $(RUNS) $(RESUME) --report --reports-dir $(REPORTS)

cifar: $(STAMP)
	$(PY) -m lenet_keras train experiments/cifar_cnn.toml $(CIFAR_DATA) $(OVERRIDES) $(SEED_RUNS) --runs-dir $(RUNS) $(RESUME) --report --reports-dir $(REPORTS)

cifar-fast: $(STAMP)
	$(PY) -m lenet_keras train experiments/cifar_fast.toml $(CIFAR_DATA) $(OVERRIDES) $(SEED_RUNS) --runs-dir $(RUNS) $(RESUME) --report --reports-dir $(REPORTS)

# --check first (data, peers' folder and script), so nothing is installed for a run that cannot start;
# .venv-peers is created unless ARGS name another --peer-python (or none)
CIFAR_FAST_BENCH = $(PY) -m benchmarks.airbench_compare --seeds $(or $(SEEDS),0 1 2) $(if $(DATA),--data-dir $(DATA)) $(PEERS_DIR) --runs-dir $(RUNS) --reports-dir $(REPORTS)
cifar-fast-bench: $(STAMP)
	$(CIFAR_FAST_BENCH) --check $(ARGS)
	$(if $(findstring --peer-python,$(ARGS)),,test -x .venv-peers/bin/python || $(MAKE) peers-venv)
	$(CIFAR_FAST_BENCH) $(ARGS)

# the MNIST speed targets' ratios: the deck's own code against our recipe(s), whole commands, alternating per
# seed, per CPU ISA class (runs/side-by-side/<class>/, reports/compare-lenet-side-by-side-<class>/)
lenet-side-by-side: $(STAMP)
	$(PY) -m benchmarks.lenet_side_by_side --seeds $(or $(SEEDS),0 1 2) $(PEERS_DIR) --runs-dir $(RUNS)/side-by-side --reports-dir $(REPORTS) $(ARGS)

crash-drill: $(STAMP)
	$(PY) -m benchmarks.crash_drill $(ARGS)

scratch: $(STAMP)
	$(PY) -m lenet_keras scratch experiments/mnist_lenet5.toml $(OVERRIDES) --runs-dir $(RUNS) --report --reports-dir $(REPORTS)

report: $(STAMP)
	$(PY) -m lenet_keras report $(EXPERIMENT) --runs-dir $(RUNS) --reports-dir $(REPORTS)

compare: $(STAMP)
	$(PY) -m lenet_keras compare $(EXPERIMENTS) --runs-dir $(RUNS) --reports-dir $(REPORTS) $(ARGS)

# the README's figures: runs in $(RUNS)/figures/ (nothing else mixes in), reports kept in git
figures: $(STAMP)
	$(PY) -m benchmarks.mnist_comparison --seeds $(or $(SEEDS),0 1 2) $(PEERS_DIR) --runs-dir $(RUNS)/figures --reports-dir $(REPORTS) $(ARGS)

reproduce: $(STAMP)
	$(PY) -m lenet_keras reproduce --runs-dir $(RUNS)/reproduction --reports-dir $(REPORTS) $(ARGS)

# into $(RUNS)/reproduction, where make reproduce finds them (seeds completed there are skipped)
LENET1998 = $(OVERRIDES) --seeds $(or $(SEEDS),0 1 2) --runs-dir $(RUNS)/reproduction $(RESUME) --report --reports-dir $(REPORTS)
lenet1998: $(STAMP)
	$(PY) -m lenet_keras train experiments/mnist_lenet5_1998.toml $(LENET1998)
	$(PY) -m lenet_keras train experiments/mnist_lenet5_1998_distorted.toml $(LENET1998)

sweep: $(STAMP)
	$(PY) -m lenet_keras sweep $(SWEEP) --workers $(WORKERS) --runs-dir $(RUNS) --reports-dir $(REPORTS)

# ARGS with --peers: the development tool benchmarks/bench_peers.py (the same options, peers in between)
BENCH = $(if $(filter --peers,$(ARGS)),benchmarks.bench_peers $(PEERS_DIR),lenet_keras bench)
bench: $(STAMP)
	$(PY) -m $(BENCH) --out-dir $(RUNS)/bench $(filter-out --peers,$(ARGS))

# PyTorch 2.13.0, CPU build, and airbench (both from PyPI, by name) for the peer scripts (make bench
# ARGS=--peers, cifar-fast-bench); the last line prints which torch build it is and fails on a CUDA build
peers-venv:
	test -x .venv-peers/bin/python || $(PYTHON) -m venv .venv-peers
	.venv-peers/bin/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.13.0 numpy pillow
	.venv-peers/bin/python -m pip install --quiet --no-deps airbench==0.1.8
	.venv-peers/bin/python -m benchmarks.preflight torch-build --peer-python .venv-peers/bin/python

tensorboard: $(STAMP)
	@echo "TensorBoard on $(RUNS)/: open http://localhost:$(PORT)/"
	$(VENV)/bin/tensorboard --logdir $(RUNS) --port $(PORT)

test: $(STAMP)
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
