# `make demo` and `make test` create or reuse .venv and install the project into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/nst stylize samples/chelsea.png --style starry-night --size 384 --quality draft -o out/demo.png

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
