# Two commands for a new user: `make demo` and `make test`. Both set up .venv first.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: setup demo test lint browser clean server pool gpu-limit crash-detection deploy worker \
	bench-cpu bench-manifest bench-slots bench-wheels bench-gpu

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# constraints.txt pins torch==2.13.0 (the CPU wheel here) and every tested version.
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/t2v render examples/prompts.csv --model tiny-random --out out

# Debian's Chromium, for the browser tests; Playwright never downloads a browser.
browser: $(CHROMIUM)

$(CHROMIUM):
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq chromium

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint browser
	$(VENV)/bin/pytest

# Running on Prefect (README: "Running on Prefect"). The server listens on loopback only.
# PREFECT_API_URL is exported to these targets only: `make demo` must not look for a server
# (a fresh machine has none; `t2v render` then starts a temporary one of its own).
PREFECT_PORT ?= 4200
PREFECT_TARGETS := server pool gpu-limit crash-detection deploy worker
$(PREFECT_TARGETS): export PREFECT_API_URL ?= http://127.0.0.1:$(PREFECT_PORT)/api
PREFECT := $(VENV)/bin/prefect
GPU_SLOTS ?= 1
CRASH_AFTER_S ?= 90

# A render waiting for a `gpu` slot asks again after about the average time a slot is held,
# but at most SLOT_WAIT_S (Prefect's default, 10 s, leaves a GPU idle for most of that; after
# a crash the dead run's slot, held until its lease expired, inflates that average).
SLOT_WAIT_S ?= 1

server: $(STAMP)
	PREFECT_UI_API_URL=$(PREFECT_API_URL) \
	PREFECT_SERVER_TASKS_TAG_CONCURRENCY_SLOT_WAIT_SECONDS=$(SLOT_WAIT_S) \
	$(PREFECT) server start --host 127.0.0.1 --port $(PREFECT_PORT)

pool: $(STAMP)
	$(PREFECT) work-pool inspect gpu >/dev/null 2>&1 || $(PREFECT) work-pool create gpu --type process

# At most GPU_SLOTS `gpu`-tagged render tasks run at once across every worker.
gpu-limit: $(STAMP)
	$(PREFECT) concurrency-limit inspect gpu >/dev/null 2>&1 || $(PREFECT) concurrency-limit create gpu $(GPU_SLOTS)

# A run whose heartbeats stop for CRASH_AFTER_S seconds (its machine died) is marked Crashed;
# its `gpu` slot comes back when the slot's lease expires, within about 75 s.
crash-detection: $(STAMP)
	$(PY) -m flows.crash_detection --silent-for $(CRASH_AFTER_S)

deploy: pool gpu-limit crash-detection
	$(PREFECT) --no-prompt deploy --all

# One worker per GPU: CUDA_VISIBLE_DEVICES=1 make worker starts the one for GPU 1. It runs
# WORKER_RUNS flow runs at a time: two runs in two processes on one GPU would share its memory.
WORKER_RUNS ?= 1

worker: $(STAMP)
	$(PREFECT) worker start --pool gpu --limit $(WORKER_RUNS)

# Benchmarks write their sections of bench/RESULTS.md (see README, "Benchmarks").
bench-cpu: $(STAMP)
	$(PY) -m bench.cpu_overhead

bench-manifest: $(STAMP)
	$(PY) -m bench.manifest_scale

bench-slots: $(STAMP)
	$(PY) -m bench.slot_handoff

# The GPU machine has torch, transformers and accelerate but no .venv: carry these
# wheels in .whl/ (gitignored), then run `make bench-gpu` there with its own python3.
bench-wheels: $(STAMP)
	$(PY) -m pip download --quiet --no-deps -d .whl diffusers==0.42.1 imageio-ffmpeg==0.6.0

bench-gpu:
	python3 -m pip install --quiet --no-deps .whl/*.whl
	python3 -m bench.gpu_throughput --compile default

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache
