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

# Exit 3 is a finished demo: its generated project plants records that go to quarantine.
demo: $(STAMP)
	$(BIN)/migrate demo || test $$? -eq 3

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

# Rewrite the outputs the README's walk and the runbooks show, from a fresh run of the walk
# against the sandbox (tests/readme_walk.py; tests/test_readme_walk.py checks them).
.PHONY: docs
docs: $(STAMP)
	$(BIN)/python -m tests.readme_walk --write
