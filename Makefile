# Everything installs into .venv on first use; a fresh clone needs only python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install test soak bench docs lint demo clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

test: install
	$(BIN)/python -m pytest --cov --cov-report=term-missing

soak: install
	$(BIN)/python -m pytest -m soak

bench: install
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench.run

docs: install
	$(BIN)/python -m pip install --quiet -e '.[test,docs]'
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

lint: install
	$(BIN)/ruff check asgi_bgtasks tests examples bench
	$(BIN)/ruff format --check asgi_bgtasks tests examples bench
	$(BIN)/mypy

demo: install
	$(BIN)/python -m examples.demo

clean:
	rm -rf $(VENV) .coverage .mypy_cache .pytest_cache .ruff_cache site
