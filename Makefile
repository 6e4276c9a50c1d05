# The two commands a newcomer runs: `make demo` and `make test`. Everything else is set-up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install demo test lint typecheck bench clean

install: $(VENV)/.installed

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
