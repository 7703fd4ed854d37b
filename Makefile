# Every target does its own set-up in .venv, so a fresh clone needs only `make run` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NBVAL := --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: run test lab bench clean

$(STAMP): pyproject.toml setup.py keepa_ops/logs/_linescan.c keepa_ops/diagnosis/_runs.c
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[notebooks,test]'
	touch $(STAMP)

# The main job on the embedded defaults: diagnose the sample incident, sweep, run the fixed schedule.
run: $(STAMP)
	$(BIN)/keepa-ops pipeline --config data/seed_incident.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q $(NBVAL) $(PYTEST_ARGS) tests notebooks

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

lab: $(STAMP)
	$(BIN)/pip install -q -e '.[lab]'
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf $(VENV) runs build *.egg-info
