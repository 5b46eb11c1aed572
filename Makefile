# Two commands for a new user: `make demo` and `make test`. Both set up .venv first.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
PG_PACKAGE := /usr/bin/pg_ctlcluster
PG_DATA ?= $(HOME)/.local/share/t2v/postgres
PG_PORT ?= 5432
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: setup demo test lint browser postgres postgres-stop clean server pool gpu-limit \
	crash-detection deploy-code deploy worker control-worker bench-cpu bench-manifest bench-slots \
	bench-gallery bench-scale bench-speed bench-wheels gpu-wheels bench-gpu bench-gpu-speed

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

# Three test processes on two cores: most tests wait on servers, workers, heartbeats and
# leases, so a third keeps the cores busy while two wait; torch gets one thread in each, as
# more would only contend. A module whose tests share a server stack marks them with one
# xdist_group, so one process builds it once and runs them in order. The slowest tests are
# listed at the end.
TEST_PROCESSES ?= 3
test: lint browser $(PG_PACKAGE)
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -n $(TEST_PROCESSES) --dist loadgroup --durations=15

# A server that many workers share keeps its state in PostgreSQL: SQLite, Prefect's default,
# takes one writer at a time ("database is locked" under a few workers and a parent).
# `make postgres` starts Debian's PostgreSQL on 127.0.0.1:PG_PORT with a `prefect` database
# and prints its URL; `make server` uses it when PREFECT_SERVER_DATABASE_CONNECTION_URL holds it.
$(PG_PACKAGE):
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq postgresql

postgres: $(PG_PACKAGE)
	@PG_DATA=$(PG_DATA) PG_PORT=$(PG_PORT) scripts/postgres.sh

postgres-stop:
	@PG_DATA=$(PG_DATA) scripts/postgres.sh stop

# Running on Prefect (README: "Running on Prefect"). The server listens on loopback unless
# PREFECT_HOST says otherwise (README: "Many GPUs and machines").
# PREFECT_API_URL is exported to these targets only: `make demo` must not look for a server
# (a fresh machine has none; `t2v render` then starts a temporary one of its own).
PREFECT_PORT ?= 4200
PREFECT_HOST ?= 127.0.0.1
PREFECT_TARGETS := server pool gpu-limit crash-detection deploy worker control-worker
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
	$(PREFECT) server start --host $(PREFECT_HOST) --port $(PREFECT_PORT)

# `gpu`: one worker per GPU renders; `control`: the parents of sharded runs, no GPU.
pool: $(STAMP)
	$(PREFECT) work-pool inspect gpu >/dev/null 2>&1 || $(PREFECT) work-pool create gpu --type process
	$(PREFECT) work-pool inspect control >/dev/null 2>&1 || $(PREFECT) work-pool create control --type process

# Not part of `make deploy`: one worker per GPU taking one run at a time already keeps runs
# off each other's GPU, and a limit costs a server round trip per batch. At most GPU_SLOTS
# `gpu`-tagged render tasks run at once across every worker, for GPUs shared with others.
gpu-limit: $(STAMP)
	$(PREFECT) concurrency-limit inspect gpu >/dev/null 2>&1 || $(PREFECT) concurrency-limit create gpu $(GPU_SLOTS)

# A run whose heartbeats stop for CRASH_AFTER_S seconds (its machine died) is marked Crashed;
# its `gpu` slot comes back when the slot's lease expires, within about 75 s.
crash-detection: $(STAMP)
	$(PY) -m flows.crash_detection --silent-for $(CRASH_AFTER_S)

# Where workers get the code (prefect.yaml's build step): unset, this folder; CODE_REPO=origin
# (a git remote's name) or CODE_REPO=URL, this folder's commit, cloned by each worker machine.
# deploy-code says which, or refuses uncommitted changes, before anything is created.
deploy deploy-code: export T2V_CODE_REPO ?= $(CODE_REPO)
deploy-code: $(STAMP)
	@$(PY) -m flows.deployed_code

deploy: deploy-code pool crash-detection
	$(PREFECT) --no-prompt deploy --all

# One worker per GPU: CUDA_VISIBLE_DEVICES=1 make worker WORKER_NAME=box1-gpu1 starts the one
# for GPU 1. It runs WORKER_RUNS flow runs at a time: two runs in two processes on one GPU
# would share its memory. Its runs inherit WORKER_NAME, and results.json names it per row.
WORKER_RUNS ?= 1
WORKER_NAME ?= $(shell hostname)$(if $(CUDA_VISIBLE_DEVICES),-gpu$(CUDA_VISIBLE_DEVICES))

# `flows.worker` runs `prefect worker start`; the first Ctrl-C or SIGTERM ends its runs (marked
# Crashed: a rerun resumes) and stops it within seconds, where Prefect's waits for them.
worker: export WORKER_NAME := $(WORKER_NAME)
worker: $(STAMP)
	$(PY) -m flows.worker --pool gpu --name $(WORKER_NAME) --limit $(WORKER_RUNS)

# The parents of sharded runs (`nightly-sharded`): they wait on their shards, so they must
# not take a `gpu` worker's only slot.
control-worker: $(STAMP)
	$(PY) -m flows.worker --pool control

# Benchmarks write their sections of bench/RESULTS.md (see README, "Benchmarks").
bench-cpu: $(STAMP)
	$(PY) -m bench.cpu_overhead

bench-manifest: $(STAMP)
	$(PY) -m bench.manifest_scale

bench-slots: $(STAMP)
	$(PY) -m bench.slot_handoff

# Opens the gallery in Chromium, as the browser tests do.
bench-gallery: $(STAMP) browser
	$(PY) -m bench.gallery_scale

# The speed levers on a slice of each transformer family's architecture: about an hour on
# 2 cores shared with other work (load average 3 to 10).
bench-speed: $(STAMP)
	$(PY) -m bench.speed

# A real server, `make deploy` and 1 then 2 `make worker`s on loopback: minutes, not seconds.
bench-scale: $(STAMP)
	$(PY) -m bench.scale

# A CUDA machine with torch, transformers and accelerate needs no .venv for the GPU
# benchmarks, only these wheels (into .whl/, gitignored; torchao for FP8): download them
# here, copy the repository with .whl/ there, and run the bench-gpu targets with its python3.
# imageio-ffmpeg 0.6.0 rather than constraints.txt's 0.8.1: its wheel is 29.5 MB against
# 66 MB, small enough for a copy capped at 64 MiB, and bundles the same libx264.
bench-wheels: $(STAMP)
	$(PY) -m pip download --quiet --no-deps -d .whl diffusers==0.42.1 imageio-ffmpeg==0.6.0
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--platform manylinux_2_28_x86_64 -d .whl torchao==0.18.0

gpu-wheels:
	python3 -m pip install --quiet --no-deps .whl/*.whl

bench-gpu: gpu-wheels
	python3 -m bench.gpu_throughput --model $(or $(BENCH_MODEL),ms-1.7b-random) $(or $(BENCH_ARGS),--compile default)

# exact, fast and fastest of one preset at its native size: one video each after a 2-step
# warm-up, sized for under 10 min on one H100 (wan2.1-1.3b, ltx-video, cogvideox-2b).
bench-gpu-speed: gpu-wheels
	python3 -m bench.gpu_throughput --model $(or $(BENCH_MODEL),wan2.1-1.3b-random) --speed exact fast fastest

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache
