# cnnvis — every target creates .venv and installs the project into it when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

OLDEST := .venv-oldest

.PHONY: demo test test-fast test-oldest lint bench clean install

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cnnvis demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# the fast tests against the oldest supported TensorFlow, Keras, NumPy, Typer (ci/oldest.txt);
# without Ray: its tests are slow ones, run by make test
$(OLDEST)/.installed: pyproject.toml ci/oldest.txt
	test -x $(OLDEST)/bin/python || $(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install --quiet --quiet --upgrade pip
	$(OLDEST)/bin/python -m pip install --quiet --quiet -c ci/oldest.txt -e . 'pytest>=8'
	touch $@

test-oldest: $(OLDEST)/.installed
	$(OLDEST)/bin/python -m pytest -q -m "not slow" -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check cnnvis_cli tests benchmarks
	$(BIN)/ruff format --check cnnvis_cli tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) $(OLDEST) cnnvis-out .pytest_cache .ruff_cache
