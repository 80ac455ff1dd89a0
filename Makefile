# Each target creates .venv and installs what it needs, so on a fresh machine
# `make run` or `make test` is the only command needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/h2proxy -v

test: $(STAMP)
	$(BIN)/python ../shared/spec/advanced_features_examples.py
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python bench/codec.py
	$(BIN)/python bench/proxy.py --record-load 30
	$(BIN)/python bench/log_read.py
	$(BIN)/python -m pytest -q -p no:cacheprovider -m slow

clean:
	rm -rf $(VENV) build *.egg-info
