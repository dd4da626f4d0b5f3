# The two set-up commands of the README. Both create the virtualenv on first use and are safe to re-run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Install the product and run its main job: the demo app on the embedded default (offline, shipped models).
run: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/fluxvid demo

# Install the product with its test extras (and Debian's chromium for the browser test, when root with apt),
# then run the whole test suite (pytest exits non-zero on no tests).
test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; }; }; } || \
		echo "chromium is not installed: the browser test will be skipped"
	$(BIN)/python -m pytest -q

# Every benchmark; each prints its table and saves it under bench/results/.
bench: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python bench/encoder.py
	$(BIN)/python bench/decode.py
	$(BIN)/python bench/frame_cache.py
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/train_workers.py
	$(BIN)/python bench/search.py
	$(BIN)/python bench/index_build.py
	$(BIN)/python bench/api_load.py
