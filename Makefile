# cdrstream developer commands. `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test setup native system-deps lint typecheck bench bench-stream kafka-start kafka-stop clean

$(BIN)/cdrstream: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,rocksdb]'
	touch $@

setup: $(BIN)/cdrstream

## The compiled core: the engine's modules built with mypyc (streams/native.py), rebuilt
## when a source changes. Where it cannot be built, everything runs on the sources.
NATIVE_STAMP := streams/_native.json
$(NATIVE_STAMP): $(BIN)/cdrstream $(wildcard streams/*.py)
	@$(BIN)/python -c 'import sys; from streams.native import main; sys.exit(main(["build"]))' \
		|| echo "make native: not compiled, running the pure-Python core (see above)" >&2

native: $(NATIVE_STAMP)

## The main job on the embedded default config: a simulated day of a law firm's calls,
## correlated into CDRs, and the billing report. No Kafka needed.
demo: setup native
	$(BIN)/cdrstream demo --out out/demo

## Debian packages the tests need (OpenSSH server for SFTP tests; Java and Maven for the
## local Kafka broker, where missing).
system-deps:
	bash deploy/install-system-deps.sh

## Every test: engine, file mode, report, SFTP against a real sshd, and the worker on a real
## Kafka broker (KAFKA_BOOTSTRAP_SERVERS, else one started for the session).
test: setup system-deps native
	$(BIN)/pytest -q

lint:
	$(BIN)/ruff check streams tests benchmarks

typecheck:
	$(BIN)/mypy

bench: setup native
	$(BIN)/python benchmarks/bench_process.py

bench-stream: setup native
	$(BIN)/python benchmarks/bench_stream.py

kafka-start:
	bash deploy/kafka-local.sh start

kafka-stop:
	bash deploy/kafka-local.sh stop

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
