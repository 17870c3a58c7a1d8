# The two commands a newcomer needs: `make demo` and `make test`.
# Both create the virtual environment in .venv on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DB ?= acctsync-demo.db

.PHONY: demo test lint docs bench bench-sql bench-follow bench-salesforce bench-decode bench-fleet proto clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e . --group dev
	touch $@

demo: $(BIN)/.installed
	$(BIN)/acctsync demo --db $(DEMO_DB)

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks examples docs/_ext
	$(BIN)/ruff format --check src tests benchmarks examples docs/_ext
	$(BIN)/mypy --strict src

test: lint
	$(BIN)/pytest

# The documentation site, into site/; --strict fails on a broken link or a page left out.
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_core.py

bench-sql: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_sql.py

bench-fleet: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_fleet.py

bench-salesforce: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_salesforce.py

bench-follow: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_follow.py

bench-decode: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_decode.py

# The Pub/Sub API's Python modules, made again from the proto beside them. Made from src/
# so that the gRPC module imports the messages by their package's name.
PROTO := src/acctsync/sources/pubsub/_proto/pubsub_api.proto
proto: $(BIN)/.installed
	$(BIN)/python -m grpc_tools.protoc -Isrc --python_out=src --pyi_out=src --grpc_python_out=src $(PROTO)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis site acctsync-demo.db*
