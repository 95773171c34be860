PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,portfolio]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/migrate demo

test: $(STAMP)
	$(BIN)/ruff check migrate tests bench
	$(BIN)/ruff format --check migrate tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2

lint: $(STAMP)
	$(BIN)/ruff check migrate tests bench
	$(BIN)/ruff format --check migrate tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) demo-work .pytest_cache
