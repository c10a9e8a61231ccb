# Two commands on a fresh Debian machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test lint demo protos clean bench system-deps

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: system-deps $(STAMP)

# Debian packages the tests and the demo use: mosquitto (a real broker), systemd-analyze.
system-deps:
	@command -v mosquitto >/dev/null 2>&1 || command -v /usr/sbin/mosquitto >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto; }
	@command -v systemd-analyze >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd; } || true

lint: $(STAMP)
	$(BIN)/ruff check meshd tests bench
	$(BIN)/mypy

test: setup lint
	$(BIN)/pytest -q

demo: setup
	$(BIN)/meshd demo

protos: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iprotos/meshd/v1 --python_out=meshd/wire/pb --pyi_out=meshd/wire/pb protos/meshd/v1/meshd.proto

bench: $(STAMP)
	for f in bench/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
