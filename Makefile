# Every target does its own set-up in .venv, so a fresh clone needs only `make run` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lab bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[notebooks,test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/keepa-ops simulate data/seed_incident.yaml --hours 24
	$(BIN)/keepa-ops simulate data/seed_incident_priority.yaml --hours 168
	$(BIN)/keepa-ops run --config data/live_priority.yaml --db runs/deals.sqlite --duration 6h --speed 720

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

lab: $(STAMP)
	$(BIN)/pip install -q -e '.[lab]'
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf $(VENV) runs build *.egg-info
