# The two set-up commands of the README. Both create the virtualenv on first use and are safe to re-run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Install the product and run its main job.
run: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/fluxvid encoder models
	$(BIN)/fluxvid encoder plan

# Install the product with its test extras and run the whole test suite (pytest exits non-zero on no tests).
test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pytest -q

# Every benchmark; each prints its table and saves it under bench/results/.
bench: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python bench/encoder.py
	$(BIN)/python bench/decode.py
	$(BIN)/python bench/search.py
	$(BIN)/python bench/index_build.py
	$(BIN)/python bench/api_load.py
