# The two commands a newcomer runs: `make demo` and `make test`. Everything else is set-up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install demo test lint typecheck bench clean

# Debian packages beside the Python ones: pgbouncer for the lab, chromium for the report's browser
# tests (playwright never downloads a browser here), pgbadger for bench/log_throughput.py.
# postgresql carries PostgreSQL's message catalogs and locales the localedef sources: the tests run
# servers that speak Russian, Chinese, German and Japanese (tests/test_server_languages.py).
# Installed as root where apt exists; named otherwise, and the tests that need one say so.
DEBIAN_PACKAGES := pgbouncer:/usr/sbin/pgbouncer chromium:/usr/bin/chromium pgbadger:/usr/bin/pgbadger \
	postgresql:/usr/share/postgresql-common/pg_wrapper locales:/usr/sbin/locale-gen

# The lab's Prisma 7 workload: npm packages only (scripts off, so nothing downloads a binary).
PRISMA_APP := playbook/lab/prisma_app

install: $(VENV)/.installed $(PRISMA_APP)/node_modules/.installed
	@missing=""; for entry in $(DEBIAN_PACKAGES); do \
		if ! command -v $${entry%%:*} >/dev/null 2>&1 && [ ! -x $${entry#*:} ]; then missing="$$missing $${entry%%:*}"; fi; \
	done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq $$missing >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; }; \
	else echo "not installed:$$missing: install your system's packages of that name (make install does it as root with apt)"; fi

$(VENV)/.installed: pyproject.toml setup.py playbook/collect/serverlog/_scan.c playbook/collect/serverlog/_records.c
	@# The server-log reader's hot loops are a small C extension, optional since the plain reader
	@# gives the same events: without a compiler or Python's headers the install goes on without
	@# it, and says so in one line here (and pip shows setup.py's own warning).
	@command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || \
		echo "make install: no C compiler: installing the plain log reader, about 25 MB/s instead of about 100 (Debian/Ubuntu: apt-get install gcc python3-dev, then make install again)"
	@$(PYTHON) -c "import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" || \
		echo "make install: no Python headers: installing the plain log reader, about 25 MB/s instead of about 100 (Debian/Ubuntu: apt-get install python3-dev, then make install again)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# Everything: the core, the lab, the fleet and the stress pools (their extras), JupyterLab and the test tools.
	$(BIN)/python -m pip install --quiet -e '.[dev,jupyter,lab,fleet,stress]'
	@# Bytecode now, once: with PYTHONDONTWRITEBYTECODE set (as in CI) every process would
	@# otherwise compile the package from source, a tenth of `playbook logs`'s start-up.
	$(BIN)/python -m compileall -q playbook >/dev/null
	# A kernelspec in the venv that papermill and JupyterLab (started from the venv) both find.
	$(BIN)/python -m ipykernel install --sys-prefix --name pg-session-playbook \
		--display-name "Python (pg-session-playbook)" >/dev/null
	@# Without the compiled reader the install is not marked done, so the next make install
	@# (after installing a compiler) builds it.
	@$(BIN)/python -c "import playbook.collect.serverlog._scan, playbook.collect.serverlog._records" 2>/dev/null \
		&& touch $@ || echo "make install: done, with the plain log reader (the compiled one was not built)"

# `prisma generate` would download a schema-engine binary it never runs: any existing file stops it.
$(PRISMA_APP)/node_modules/.installed: $(PRISMA_APP)/package.json $(PRISMA_APP)/package-lock.json $(PRISMA_APP)/prisma/schema.prisma
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "npm not found: the lab's Prisma 7 workload and its scenarios are skipped (install Node.js 20.19+ and npm, then make install)"; \
	else \
		cd $(PRISMA_APP) && { npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null || \
			{ echo "make install: npm ci failed in $(PRISMA_APP) (is the npm registry reachable?)"; exit 1; }; } && \
		{ PRISMA_SCHEMA_ENGINE_BINARY="$$PWD/prisma/schema.prisma" PRISMA_HIDE_UPDATE_MESSAGE=1 \
			node_modules/.bin/prisma generate >/dev/null 2>&1 || \
			{ echo "make install: prisma generate failed in $(PRISMA_APP)"; exit 1; }; } && \
		touch node_modules/.installed; \
	fi

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
