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

clean:
	rm -rf $(VENV) var .pytest_cache
