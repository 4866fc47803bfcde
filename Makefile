# dermstack: `make demo` and `make test` are the whole set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The exact versions the suite is tested with (the lock), and every dependency at its lower bound.
LOCK   := constraints.txt
LOWER  := constraints-lower.txt
# pytest-xdist workers; each test file runs on one (its module fixtures built once). Most tests use one
# core, so two workers on a 2-core machine halve the suite's time (make test TEST_JOBS=auto: one per core).
TEST_JOBS ?= 2
PYTEST = -m pytest -q -p no:cacheprovider --timeout=900 -n $(TEST_JOBS) --dist loadfile

.PHONY: demo test test-fast test-lower lint install lock wheelhouse bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Re-install only when the project metadata or the lock changes (idempotent, fast on a second run).
$(STAMP): pyproject.toml $(LOCK) | $(PY)
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[dev,docs]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dermstack demo --out runs/demo

# Headless Chromium for the report's browser test (Debian package; skipped where it cannot be installed).
$(VENV)/.chromium: | $(PY)
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium) || true
	touch $@

test: $(STAMP) $(VENV)/.chromium
	$(PY) $(PYTEST); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

# The edit-test loop: everything but the tests marked slow (under 2 minutes on 2 cores).
test-fast: $(STAMP)
	$(PY) $(PYTEST) -m "not slow"

# The fast tests with every dependency at the lower bound pyproject.toml declares, in their own venv.
test-lower:
	test -x .venv-lower/bin/python || $(PYTHON) -m venv .venv-lower
	.venv-lower/bin/python -m pip install --quiet --upgrade pip
	.venv-lower/bin/python -m pip install --quiet --only-binary=:all: -c $(LOWER) -e '.[dev,docs]'
	.venv-lower/bin/python $(PYTEST) -m "not slow"

# Write the lock from the venv the suite passed in (after changing a dependency: re-create .venv, make test, make lock).
lock: $(STAMP)
	(echo "# The lock: the exact versions the test suite passes with (make lock writes it; make install uses it)."; \
	 $(PY) -m pip freeze --all --exclude-editable | grep -v '^pip==') > $(LOCK)

# Wheels for an offline install (a Kaggle notebook without internet): docs/install.md.
wheelhouse: $(STAMP)
	$(PY) scripts/wheelhouse.py --out wheelhouse

# House rules (pyproject.toml [tool.ruff]) over every Python file of the tree; tests/test_lint.py runs the same check.
lint: $(STAMP)
	$(VENV)/bin/ruff check

# Every benchmark at its full size (the README's figures; hours on 2 cores). Each also has a --smoke
# size, which tests/test_shipped.py runs. vs_autogluon needs AutoGluon's own venv (its docstring).
bench: $(STAMP)
	for b in benchmarks/*.py; do \
	  if [ $$b = benchmarks/vs_autogluon.py ] && [ ! -x .venv-autogluon/bin/python ]; then \
	    echo "skipped $$b: no .venv-autogluon (see its docstring)"; continue; fi; \
	  $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .venv-lower runs .pytest_cache wheelhouse site
