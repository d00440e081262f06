# The two commands: `make run` (the whole platform on the embedded default) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test lint typecheck format install bench clean-var fuzz FORCE

# The interpreter a virtualenv stands on: its installation and version. A $(VENV) built by another
# interpreter than $(PYTHON) (a pyenv one, an older Debian one) is rebuilt, not silently reused; the
# file records which one it stands on, and is rewritten only when that changes.
PYTHON_ID := import sys; print(sys.base_prefix, sys.version.split()[0])
$(VENV)/.python: FORCE
	@want="$$($(PYTHON) -c '$(PYTHON_ID)')" || { echo "PYTHON=$(PYTHON) does not run"; exit 1; }; \
	have="$$($(BIN)/python -c '$(PYTHON_ID)' 2>/dev/null)"; \
	if [ "$$have" != "$$want" ]; then \
		if [ -d $(VENV) ]; then echo "$(VENV) stands on Python '$$have', not on $(PYTHON) ('$$want'): rebuilding it"; fi; \
		rm -rf $(VENV) && $(PYTHON) -m venv $(VENV) && echo "$$want" > $@; \
	elif [ "$$(cat $@ 2>/dev/null)" != "$$want" ]; then echo "$$want" > $@; fi

$(STAMP): requirements/base.txt requirements/dev.txt $(VENV)/.python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements/dev.txt
	touch $(STAMP)

install: $(STAMP)

# Starts embedded PostgreSQL and Redis unless DATABASE_URL and REDIS_URL name others,
# migrates, seeds demo data and runs web + worker + beat on http://127.0.0.1:8000.
run: $(STAMP)
	$(BIN)/python -m config.embedded -- $(BIN)/python -m config.runall

# The whole suite against PostgreSQL and Redis: those named by DATABASE_URL and REDIS_URL,
# else embedded ones kept apart from `make run`'s data (var/test/).
test: $(STAMP)
	EMBEDDED_VAR_DIR=$(CURDIR)/var/test $(BIN)/python -m config.embedded -- $(BIN)/python -m pytest $(PYTEST_ARGS)

# The API fuzzed against its own OpenAPI schema (schemathesis, every operation, valid and invalid
# requests as a Staff token; FUZZ_EXAMPLES per operation and mode), on the same servers as `make test`.
FUZZ_EXAMPLES ?= 15
fuzz: $(STAMP)
	EMBEDDED_VAR_DIR=$(CURDIR)/var/test FUZZ=1 FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m config.embedded -- \
		$(BIN)/python -m pytest -q -p no:cacheprovider tests/config/test_fuzz_api.py
	cat var/fuzz-report.json

lint: $(STAMP) typecheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy with django-stubs over the modules listed (configuration in pyproject.toml). The plugin loads the
# settings, which need well-formed server URLs but connect to nothing.
TYPECHECK := audience/services audience/selectors.py audience/ingest/services.py audience/ingest/preview.py \
	audience/ingest/selectors.py messaging/selectors.py messaging/services/send_outcomes.py messaging/services/send.py \
	messaging/services/create.py messaging/services/send_batch.py messaging/services/send_rows.py campaigns/selectors.py \
	campaigns/services/launch_checks.py campaigns/services/dry_run.py campaigns/services/copies.py \
	campaigns/services/schedules.py campaigns/services/eligibility.py messaging/services/send_queue.py \
	campaigns/services/cost.py reporting/selectors.py reporting/summary_scanned.py reporting/arm_outcomes.py
typecheck: $(STAMP)
	DATABASE_URL=$${DATABASE_URL:-postgres://typecheck@127.0.0.1/typecheck} REDIS_URL=$${REDIS_URL:-redis://127.0.0.1/0} \
		$(BIN)/mypy $(TYPECHECK)

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Every benchmark, each in a database of its own, on the servers named by DATABASE_URL and
# REDIS_URL, else the embedded ones. Sizes can be lowered: make bench BENCH_ROWS=100000
BENCH_ROWS ?= 1000000
bench: $(STAMP)
	EMBEDDED_VAR_DIR=$(CURDIR)/var/bench $(BIN)/python -m config.embedded -- sh -c '\
		$(BIN)/python -m bench.ingest --rows $(BENCH_ROWS) && \
		$(BIN)/python -m bench.fanout --contacts $(BENCH_ROWS) && \
		$(BIN)/python -m bench.webhooks --requests 20000 && \
		$(BIN)/python -m bench.send --messages 1600 --mps 80 && \
		$(BIN)/python -m bench.reporting --messages $(BENCH_ROWS)'

clean-var:
	rm -rf var/
