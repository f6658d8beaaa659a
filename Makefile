# skyclass: the few targets a person needs.
#   make demo   install everything, start the embedded database, run the demo
#   make test   install everything, then lint, type-check and run the test suite
#   make bench  run the benchmarks (figures go to docs/benchmarks.md)
#   make reliability  the reliability suite at full counts (docs/reliability.md)
#   make docs   regenerate docs/cli.md from the commands' --help
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SHELL  := /bin/bash
PIP    := set -o pipefail; $(BIN)/python -m pip install --quiet --disable-pip-version-check
# pip warns about every configured local index directory that does not exist; drop those lines
QUIET_PIP := 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }

.PHONY: setup system browser vo python demo test lint pytest reliability bench bench-growth docs clean

setup: system python extension

system:
	@bash .ci/install-system.sh

python: $(STAMP)

# The skyclass C extension: one folder, src/pg_skyclass (C sources, skyclass.control,
# SQL scripts in sql/, pg_regress suite in test/), built and installed with the
# server's pg_config; installing writes into the server's lib dir (sudo unless root).
# WERROR=1 (set by `make test`) rebuilds every object with -Werror.
PG_MAJOR  ?= 15
PG_CONFIG ?= $(firstword $(wildcard /usr/lib/postgresql/$(PG_MAJOR)/bin/pg_config) pg_config)
EXTENSION_DIR := src/pg_skyclass
SUDO      ?= $(if $(filter 0,$(shell id -u)),,sudo)
EXT_FLAGS  = -s --no-print-directory -C $(EXTENSION_DIR) PG_CONFIG=$(PG_CONFIG)
.PHONY: extension
extension: system
	@$(MAKE) $(EXT_FLAGS) $(if $(WERROR),WERROR=1 -B)
	@$(SUDO) $(MAKE) $(EXT_FLAGS) install
	@echo "extension: skyclass installed into $$($(PG_CONFIG) --pkglibdir)$(if $(WERROR), (built with -Werror))"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip $(QUIET_PIP)
	@$(PIP) -c constraints.txt -e '.[dev]' $(QUIET_PIP)
	@touch $(STAMP)
	@echo "python: environment ready in $(VENV)/ (CLI: $(BIN)/skyclass)"

demo: setup
	@$(BIN)/skyclass demo

lint: python
	@$(BIN)/ruff check src tests bench
	@$(BIN)/ruff format --check src tests bench
	@$(BIN)/mypy

pytest: setup
	@$(BIN)/pytest $(PYTEST_ARGS)

# The extension is rebuilt with -Werror: a warning fails the suite.
test: WERROR = 1
test: setup browser vo lint pytest

# The standing reliability tests at their full counts (docs/reliability.md).
reliability: setup
	@SKYCLASS_RELIABILITY=full $(BIN)/pytest -m reliability $(PYTEST_ARGS)

# Headless Chromium renders the HTML report in the test suite.
browser:
	@bash .ci/install-system.sh --with-browser

# stilts (taplint, a Java program) validates the TAP service in the test suite.
vo:
	@bash .ci/install-system.sh --with-vo


bench: setup
	@$(BIN)/python bench/run_all.py

# Cost growth at 1M, 10M and 100M rows (about 1.5 h on 2 cores and up to 60 GB of free
# disk, checked before each step; docs/benchmarks.md). Not part of `make bench`.
# GROWTH_ARGS="--sizes 1000000,10000000" for a shorter run.
bench-growth: setup
	@$(BIN)/python bench/bench_growth.py $(GROWTH_ARGS)

# docs/cli.md is generated from the click commands; tests/docs fails when it is stale.
docs: python
	@$(BIN)/python -m skyclass.docs_cli docs/cli.md
	@echo "docs: wrote docs/cli.md"

clean:
	rm -rf $(VENV) build src/*.egg-info
