# Two commands on a fresh machine: `make demo`, then `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: venv demo test test-fast test-guests bench golden clean fuzz

# The virtualenv is rebuilt whenever the project's metadata changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

## make demo: transform the embedded example bundle (a copy of it, in a temp dir)
demo: venv
	bash examples/demo.sh $(BIN)

## make test: unit, golden, property, CLI and (as root) end-to-end tests
test: venv
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

## make test-guests: only the qemu guests (real v2, hybrid and legacy hosts, rootless runc)
test-guests: venv
	$(BIN)/python -m pytest -q -ra tests/guests $(PYTEST_ARGS)

## make bench: cost ratios measured side by side in one run (the runc ones need root)
BENCHES := plan copyup boot batch load services ready
bench: venv
	@for b in $(BENCHES); do \
	  if [ -f bench/bench_$$b.py ]; then echo "== bench/bench_$$b.py"; $(BIN)/python bench/bench_$$b.py || exit 1; fi; \
	done

## make fuzz: the hardening properties with 50,000 examples each (CI runs 3,000:
## OCI_SYSTEMD_HYPOTHESIS_PROFILE=ci), plus the SIGKILL test with other seeds
fuzz: venv
	OCI_SYSTEMD_HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -ra tests/hardening/test_hardening_properties.py $(PYTEST_ARGS)
	for seed in 1 2 3 4 5; do OCI_SYSTEMD_CRASH_SEED=$$seed $(BIN)/python -m pytest -q \
	    tests/hardening/test_hardening_crash.py -k random || exit 1; done

## make golden: rewrite golden/ after an intended change of behaviour (then read the diff)
golden: venv
	$(BIN)/oci-systemd golden update golden

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
