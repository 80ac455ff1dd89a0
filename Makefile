# Each target creates .venv and installs what it needs, so on a fresh machine
# `make run` or `make test` is the only command needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider

# `make fuzz`: how many state-machine examples, how long each atheris harness runs, where they write.
FUZZ_EXAMPLES ?= 5000
FUZZ_SECONDS ?= 300
FUZZ_DIR ?= out/fuzz

.PHONY: run test lint fuzz bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/h2proxy -v

# Lint (ruff) and types (mypy), configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The gate: lint, types, then the whole suite (hypothesis derandomized: see tests/conftest.py).
test: lint
	$(PYTEST)

# Long randomized runs: the relay state machine with fresh random examples, then, when atheris
# is installed (`.venv/bin/pip install atheris`), each coverage-guided harness of bench/fuzz for
# FUZZ_SECONDS; crashes land in $(FUZZ_DIR) (see bench/fuzz/README.md).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz FUZZ_RELAY_EXAMPLES=$(FUZZ_EXAMPLES) $(PYTEST) tests/test_fuzz_relay.py
	@if ! $(BIN)/python -c 'import atheris' 2>/dev/null; then \
	    echo "atheris is not installed: the coverage-guided harnesses did not run"; exit 0; fi; \
	set -e; mkdir -p $(FUZZ_DIR)/codec $(FUZZ_DIR)/reader $(FUZZ_DIR)/relay; \
	$(BIN)/python bench/fuzz/make_corpus.py $(FUZZ_DIR)/seeds; \
	for h in codec reader relay; do \
	    if [ $$h = relay ]; then seeds=$(FUZZ_DIR)/seeds/relay; else seeds=$(FUZZ_DIR)/seeds/frames; fi; \
	    $(BIN)/python bench/fuzz/fuzz_$$h.py $(FUZZ_DIR)/$$h $$seeds -max_total_time=$(FUZZ_SECONDS) \
	        -artifact_prefix=$(FUZZ_DIR)/ -print_final_stats=1; \
	done

bench: $(STAMP)
	$(BIN)/python bench/codec.py
	$(BIN)/python bench/hpack.py
	$(BIN)/python bench/proxy.py --record-load 30
	$(BIN)/python bench/log_read.py
	$(PYTEST) -m slow

clean:
	rm -rf $(VENV) build *.egg-info
