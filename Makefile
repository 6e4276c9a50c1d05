# The two commands a newcomer runs: `make demo` and `make test`. Everything else is set-up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install demo test lint typecheck bench clean

install: $(VENV)/.installed
	@# The lab's PgBouncer is Debian's package: installed as root where apt exists, named otherwise.
	@if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq pgbouncer >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq pgbouncer >/dev/null; }; \
	else echo "pgbouncer not found: the lab needs it; install your system's pgbouncer package (make install does it as root with apt)"; fi
	@# pgBadger is what bench/log_throughput.py compares against: Debian's package, the same way.
	@if command -v pgbadger >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq pgbadger >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq pgbadger >/dev/null; }; \
	else echo "pgbadger not found: bench/log_throughput.py times ours alone; install your system's pgbadger package (make install does it as root with apt)"; fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,jupyter]'
	# A kernelspec in the venv that papermill and JupyterLab (started from the venv) both find.
	$(BIN)/python -m ipykernel install --sys-prefix --name pg-session-playbook \
		--display-name "Python (pg-session-playbook)" >/dev/null
	touch $@

demo: install
	$(BIN)/playbook demo --out demo

lint: install
	$(BIN)/ruff check playbook tests bench notebooks
	$(BIN)/ruff format --check playbook tests bench notebooks
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

test: install lint typecheck
	$(BIN)/pytest

bench: install
	$(BIN)/python bench/run_overhead.py

clean:
	rm -rf $(VENV) demo reports .pytest_cache .mypy_cache .ruff_cache
