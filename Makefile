# PrefixScope: one command to set up and run the demo, one to run every test.
#   make demo   — create .venv, install everything, run `prefixscope demo`
#   make test   — create .venv, install everything, run lint + the docs build + every test
#   make docs   — serve the docs site (docs/, mkdocs.yml) on http://127.0.0.1:8000
VENV   ?= .venv
PYTHON ?= python3
PIP     = $(VENV)/bin/pip
STAMP   = $(VENV)/.installed
NATIVE  = $(VENV)/.native-built

.PHONY: setup demo test test-simulations test-fast lint docs vllm-venv system-deps clean

setup: $(STAMP) $(NATIVE)

# the compiled decoder again when its source changed since the install built it (an optional
# build: without a compiler it warns and the Python decoder runs)
$(NATIVE): collector/decoding/native/otlp.c setup.py | $(STAMP)
	$(VENV)/bin/python setup.py -q build_ext --inplace
	touch $(NATIVE)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	# torch first, pinned: a looser requirement could pull a multi-GB CUDA build
	$(PIP) install -q torch==2.13.0
	# setuptools prints an informational "Editable installation." banner through the warnings
	# module (its meta-path-finder strategy, which the package-dir mapping needs); only that
	# warning is filtered: errors and every other warning still show
	PYTHONWARNINGS="$${PYTHONWARNINGS:+$$PYTHONWARNINGS,}ignore:Editable installation" \
	  $(PIP) install -q -e '.[server,hf,dev,docs]'
	touch $(STAMP) $(NATIVE)

demo: setup
	$(VENV)/bin/prefixscope demo $(ARGS)

system-deps:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

vllm-venv:
	bash scripts/setup-vllm.sh

lint: setup
	$(VENV)/bin/ruff check .

# scripts/check installs the main venv itself (make setup), beside the vLLM and interop venvs
test: system-deps
	bash scripts/check

test-simulations: setup
	nice -n 19 $(VENV)/bin/pytest -s -m fullsim tests/analytics/test_detection.py tests/analytics/test_slices.py

docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve $(ARGS)

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow and not vllm and not browser"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache site
