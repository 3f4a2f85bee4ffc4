# The two commands of this project: `make test` and `make run`. Both build the
# environment from nothing: a .venv with the pinned dependencies (requirements.lock
# constrains every transitive version).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test files run in parallel worker processes (pytest-xdist), one file per worker at
# a time so that a module's shared fixtures (a pipeline run, a trained model, a
# server) are built once. Most of the suite's time is single-threaded (Python,
# TensorFlow tracing, Beam's DirectRunner, process start-up), so two workers keep
# two cores busy; the longest files start first (tests/conftest.py). `make test
# TEST_WORKERS=0` runs everything in one process.
TEST_WORKERS ?= 2

.PHONY: venv test run bench fixtures clean

# TensorFlow's wheel is 570 MB: the install gets two more tries after a dropped connection.
$(STAMP): setup.py requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	for try in 1 2 3; do \
	  $(PY) -m pip install --quiet -c requirements.lock -e '.[test]' && break; \
	  [ $$try -lt 3 ] || exit 1; echo "pip install failed (try $$try of 3); trying again" >&2; sleep 5; \
	done
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

run: $(STAMP)
	$(PY) -m pipeline.run --runner=DirectRunner

# Peer benchmarks need PyTorch + transformers (the `reference` extra), installed
# only here, never for tests.
$(VENV)/.bench-installed: $(STAMP)
	$(PY) -m pip install --quiet -c requirements.lock -e '.[reference]'
	touch $@

bench: $(VENV)/.bench-installed
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache
