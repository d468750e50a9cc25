# Two commands: `make run` (set up, migrate, load the demo clinic, serve) and `make test`.
VENV   := .venv
BIN    := $(VENV)/bin
PYTHON ?= python3
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test install lint bench clean

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "uv>=0.4,<1"

install: $(BIN)/uv
	$(BIN)/uv sync --frozen --inexact --quiet

run: install
	$(BIN)/regenspine db upgrade
	$(BIN)/regenspine demo
	@echo "Open http://$(HOST):$(PORT)  (demo logins above; password spine-demo-harbour-47)"
	$(BIN)/regenspine serve --host $(HOST) --port $(PORT)

test: $(BIN)/uv
	$(BIN)/uv sync --frozen --inexact --quiet --extra test
	$(BIN)/python -m pytest

lint: $(BIN)/uv
	$(BIN)/uv sync --frozen --inexact --quiet --extra test
	$(BIN)/ruff check src tests
	$(BIN)/mypy src

# Benchmarks (not run in CI; figures in docs/benchmarks.md). PostgreSQL on 127.0.0.1:5432 is
# needed for BENCH_BACKEND=both or postgresql; `make bench BENCH_BACKEND=sqlite` skips it.
BENCH_BACKEND ?= both

bench:
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "make bench needs wrk, the HTTP load generator."; \
	  echo "Install it with: sudo apt-get install wrk   (Debian/Ubuntu; package 'wrk')"; \
	  exit 1; }
	@$(MAKE) --no-print-directory install
	$(BIN)/python bench/bench_demo_seed.py --backend $(BENCH_BACKEND)
	$(BIN)/python bench/bench_load.py --backend $(BENCH_BACKEND) --floor --cpu
	$(BIN)/python bench/bench_request_cost.py --backend $(BENCH_BACKEND)
	$(BIN)/python bench/bench_read_floor.py --backend $(BENCH_BACKEND)
	$(BIN)/python bench/bench_cold_start.py

clean:
	rm -rf $(VENV) var .pytest_cache
