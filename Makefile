# The two commands: `make demo` and `make test`. Each does all the set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test bench lint typecheck install redis clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	$(PY) -m pip install -q -c constraints.txt -e '.[all]'
	@touch $(STAMP)

# Prints the URL of a reachable Redis (QUASAR_REDIS_URL, else a local redis-server it starts).
redis: $(STAMP)
	@scripts/ensure_redis.sh

demo: $(STAMP)
	@url=$$(scripts/ensure_redis.sh) && QUASAR_REDIS_URL=$$url $(VENV)/bin/quasar demo

test: $(STAMP)
	@scripts/ensure_redis.sh >/dev/null
	@scripts/ensure_test_tools.sh
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	@url=$$(scripts/ensure_redis.sh) && QUASAR_REDIS_URL=$$url $(PY) -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# mypy cannot follow setuptools' package-dir mapping (quasar.signals -> signals/), so it checks a link farm
# laid out as the installed namespace: .mypy_layout/quasar/{*.py, signals, store, ...}.
ROOMS := signals store registry online training_adapters serving_adapters examples
typecheck: $(STAMP)
	@rm -rf .mypy_layout && mkdir -p .mypy_layout/quasar
	@for f in quasar/*.py; do ln -s "$(CURDIR)/$$f" .mypy_layout/quasar/; done
	@for d in quasar/*/; do test -f "$$d/__init__.py" && ln -s "$(CURDIR)/$${d%/}" .mypy_layout/quasar/; done; true
	@for d in $(ROOMS); do ln -s "$(CURDIR)/$$d" .mypy_layout/quasar/$$d; done
	cd .mypy_layout && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml -p quasar

clean:
	rm -rf $(VENV) .demo .bench .pytest_cache .hypothesis .mypy_layout
