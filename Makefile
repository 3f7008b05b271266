# stopwise — `make demo` runs the whole loop, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STOPWISE := $(VENV)/bin/stopwise
PYTEST_ARGS ?=

.PHONY: help venv test test-unit test-slow demo sim bench broker-fetch broker-start broker-stop schemas clean

help:
	@echo "make demo    - local broker + daemon + ONNX inferencer fleet + live threshold table"
	@echo "make test    - whole suite (unit + integration on a real Kafka broker)"
	@echo "make test-slow - soak/chaos tests"
	@echo "make sim     - every simulator scenario with every baseline, report in out/sim"
	@echo "make bench   - benchmarks (results in bench/results, summarised in BENCHMARKS.md)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -m "not slow" -q $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest -m "not slow and not kafka" -q $(PYTEST_ARGS)

test-slow: venv
	$(PY) -m pytest -m slow -q $(PYTEST_ARGS)

demo: venv
	bash scripts/demo.sh

sim: venv
	bash scripts/sim.sh

bench: venv
	bash scripts/bench.sh

broker-fetch: venv
	$(STOPWISE) broker fetch

broker-start: venv
	$(STOPWISE) broker start

broker-stop: venv
	$(STOPWISE) broker stop

schemas: venv
	$(STOPWISE) schemas --out daemon/schemas

clean:
	rm -rf $(VENV) out .pytest_cache
