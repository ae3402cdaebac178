# StreamScore developer entry points. Needs only Python 3.11 and access to PyPI.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install dev demo test bench lint lock docs compose-up compose-down clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install --constraint=constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install StreamScore with the dev extras

dev: $(STAMP)  ## run the whole stack, score the demo data, keep running (Ctrl-C stops)
	$(BIN)/streamscore dev --demo --keep

demo: $(STAMP)  ## run the whole stack, score the demo data, print a summary and stop
	$(BIN)/streamscore dev --demo

test: $(STAMP)  ## run the test suite
	$(BIN)/pytest --cov --cov-report=term:skip-covered --cov-report=xml --cov-fail-under=80

bench: $(STAMP)  ## end-to-end throughput and latency on engines found as the tests find them
	$(BIN)/python bench/with_engines.py bench/bench_pipeline.py --events 100000 --rate 2000 --seconds 10

lock: $(STAMP)  ## refresh constraints.txt from .venv (after upgrading and passing the tests)
	{ sed -n '1,2p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

lint: $(STAMP)  ## ruff, mypy and the layer contracts (import-linter)
	$(BIN)/ruff check .
	$(BIN)/mypy .
	$(BIN)/lint-imports

docs: $(STAMP)  ## export the AsyncAPI document to asyncapi.json
	$(BIN)/streamscore docs asyncapi --output asyncapi.json

compose-up:  ## run on Docker Compose (needs STREAMSCORE_JWT_SECRET)
	docker compose up --build -d

compose-down:  ## stop the Compose stack
	docker compose down

clean:  ## remove dev state (.streamscore: embedded database, logs) and artifacts
	rm -rf .streamscore artifacts
