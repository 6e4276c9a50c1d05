# The two commands a newcomer runs: `make demo` and `make test`. Everything else is set-up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install demo test lint typecheck bench clean

# Debian packages beside the Python ones: pgbouncer for the lab, chromium for the report's browser
# tests (playwright never downloads a browser here), pgbadger for bench/log_throughput.py.
# Installed as root where apt exists; named otherwise, and the tests that need one say so.
DEBIAN_PACKAGES := pgbouncer:/usr/sbin/pgbouncer chromium:/usr/bin/chromium pgbadger:/usr/bin/pgbadger

install: $(VENV)/.installed
	@missing=""; for entry in $(DEBIAN_PACKAGES); do \
		if ! command -v $${entry%%:*} >/dev/null 2>&1 && [ ! -x $${entry#*:} ]; then missing="$$missing $${entry%%:*}"; fi; \
	done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq $$missing >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; }; \
	else echo "not installed:$$missing: install your system's packages of that name (make install does it as root with apt)"; fi

$(VENV)/.installed: pyproject.toml setup.py playbook/collect/serverlog/_scan.c playbook/collect/serverlog/_records.c
	@# The server-log reader's hot loops are a small C extension: say what is missing in one line.
	@command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || \
		{ echo "make install: a C compiler is needed (Debian/Ubuntu: apt-get install gcc python3-dev)"; exit 1; }
	@$(PYTHON) -c "import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" || \
		{ echo "make install: the Python headers are needed (Debian/Ubuntu: apt-get install python3-dev)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,jupyter]'
	@# Bytecode now, once: with PYTHONDONTWRITEBYTECODE set (as in CI) every process would
	@# otherwise compile the package from source, a tenth of `playbook logs`'s start-up.
	$(BIN)/python -m compileall -q playbook >/dev/null
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
	# Both cores: most tests wait on servers and kernels; a test module stays on one worker.
	$(BIN)/pytest -n 2 --dist loadfile

bench: install
	$(BIN)/python bench/run_overhead.py

clean:
	rm -rf $(VENV) demo reports .pytest_cache .mypy_cache .ruff_cache
