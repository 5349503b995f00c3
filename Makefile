# gripcore — every target sets up its own virtual environment first (a fresh machine needs only
# Python 3.11+ and a C compiler).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.gripcore-installed
PYTEST_ARGS ?=

.PHONY: setup run test fuzz lint typecheck test-fast test-pure bench clean dist-check test-floors

$(STAMP): pyproject.toml setup.py src/gripcore/_fast.pyx
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

## The main job: gripcore with its built-in starter kit.
run: $(STAMP)
	$(VENV)/bin/gripcore serve

## All checks: lint, types, then the suite twice: the whole suite on the compiled hot path,
## then every unit and property test again on the pure twin (the end-to-end suites, marked
## e2e, exercise the adapters, which are the same on either), with branch coverage of
## src/gripcore combined over both legs and required to be 100%.
PURE_ARGS ?= -m "not e2e and not slow"
test: $(STAMP) lint typecheck
	@rm -f .coverage .coverage.*
	GRIPCORE_REQUIRE_EXTENSIONS=1 COVERAGE_FILE=.coverage.fast \
	  $(PY) tools/pytest-exit.py -m pytest --cov --cov-report= $(PYTEST_ARGS)
	GRIPCORE_NO_EXTENSIONS=1 COVERAGE_FILE=.coverage.pure \
	  $(PY) tools/pytest-exit.py -m pytest --cov --cov-report= $(PURE_ARGS) $(PYTEST_ARGS)
	$(PY) -m coverage combine -q .coverage.fast .coverage.pure
	$(PY) -m coverage report
	$(PY) -m coverage report --include='src/gripcore/*' --fail-under=100 >/dev/null \
	  || { echo "src/gripcore is below 100% branch coverage (see the report above)"; exit 1; }

## The property tests (hypothesis) run randomly, with GRIPCORE_FUZZ_FACTOR (default 20) times the
## examples `make test` runs derandomized, on the compiled hot path and on the pure twin. Keep any
## failing example it prints as an explicit @example on that test.
FUZZ_ARGS ?= -m "not e2e" -p no:cacheprovider
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz GRIPCORE_REQUIRE_EXTENSIONS=1 $(PY) -m pytest -q $(FUZZ_ARGS) $(PYTEST_ARGS)
	HYPOTHESIS_PROFILE=fuzz GRIPCORE_NO_EXTENSIONS=1 $(PY) -m pytest -q $(FUZZ_ARGS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check src adapters tests bench tools examples
	$(PY) -m ruff format --check src adapters tests bench tools examples

typecheck: $(STAMP)
	$(PY) -m mypy

## Micro-benchmarks of the hot path, then gripcore side by side with Pushpin and Nchan.
## BENCH_ARGS="--fanout-conns 1000,5000,10000 --duration 10" for the full-size run.
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) -m pytest bench --benchmark-only -q -p no:cacheprovider
	$(PY) bench/run_bench.py $(BENCH_ARGS)

## Build the sdist and the wheel, check their contents, install the wheel alone into a fresh
## virtual environment and run `gripcore check proxy` against its `gripcore serve`.
dist-check: $(STAMP)
	$(PY) tools/dist_check.py

## The unit tests on the lowest dependency versions pyproject.toml allows (tools/floors.py pins
## each `>=` floor exactly), in their own virtual environment, so that a floor cannot be wrong
## unnoticed (the test tools that are not gripcore dependencies come at their newest). The pure
## twin is enough here: the floors are those of the Python dependencies. Editable, as in .venv:
## pytest rewrites the asserts of a plugin's installed distribution (pytest_gripcore's), which
## breaks runpy on gripcore.__main__ (test_cli); the installed wheel is make dist-check's job.
## Properties run derandomized, as in make test (tests/conftest.py's default profile).
FLOORS_VENV ?= .venv-floors
FLOORS_TESTS ?= tests -m "not e2e and not slow" --ignore=tests/test_browser.py
test-floors: $(STAMP)
	rm -rf $(FLOORS_VENV)
	$(PYTHON) -m venv $(FLOORS_VENV)
	$(PY) tools/floors.py > $(FLOORS_VENV)/floors.txt
	cat $(FLOORS_VENV)/floors.txt
	GRIPCORE_NO_EXTENSIONS=1 $(FLOORS_VENV)/bin/python -m pip install -q --disable-pip-version-check \
	  -c $(FLOORS_VENV)/floors.txt -e '.[dev]'
	$(FLOORS_VENV)/bin/python -m pip list --disable-pip-version-check
	GRIPCORE_NO_EXTENSIONS=1 $(FLOORS_VENV)/bin/python -m pytest -q -p no:cacheprovider \
	  $(FLOORS_TESTS)

clean:
	rm -rf $(VENV) $(FLOORS_VENV) build dist src/*.egg-info src/gripcore/*.so src/gripcore/_fast.c .coverage*
