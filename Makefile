# The two commands of this project: `make test` and `make run`. Both build the
# environment from nothing: a .venv with the pinned dependencies (requirements.lock
# constrains every transitive version).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv test run bench fixtures clean

$(STAMP): setup.py requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

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
