# Everything installs into .venv on first use; a fresh clone needs only python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO_INSTALLED := $(VENV)/.demo-installed

.PHONY: install test test-all soak bench docs lint demo clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,docs]'  # docs: the docs-build test
	touch $@

test: install
	$(BIN)/python -m pytest --cov --cov-report=term-missing

# Python 3.11-3.13 from pyenv where it has them (nox finds python3.1x on PATH);
# in CI a missing interpreter is an error.
PYENV_VERSIONS := $(shell command -v pyenv >/dev/null 2>&1 && for v in 3.11 3.12 3.13; do pyenv latest $$v 2>/dev/null; done | paste -sd: -)

# Coverage must reach 100 % over all the runs together.
test-all: install
	rm -f .coverage
	PYENV_VERSION=$(PYENV_VERSIONS) $(BIN)/nox

soak: install
	$(BIN)/python -m pytest -m soak

# One run per Python, each in a venv of its own (bench/pythons.sh): 3.11 and
# 3.13 (pyenv's latest, else python3.1x on PATH), results side by side in
# docs/benchmarks.md. PYTHON=... on the command line, or BENCH_PYTHONS="3.13",
# runs only those; the others keep their last results. About five minutes a
# Python; BENCH_QUICK=1 for about two, BENCH_ONLY=... (bench/run.py).
BENCH_PYTHONS ?= $(if $(filter command line,$(origin PYTHON)),$(PYTHON),3.11 3.13)

bench:
	bash bench/pythons.sh $(BENCH_PYTHONS)

# Prints only its progress: tests/test_docs_build.py fails on any other line.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: install
	$(BIN)/ruff check asgi_bgtasks tests examples bench noxfile.py
	$(BIN)/ruff format --check asgi_bgtasks tests examples bench noxfile.py
	$(BIN)/mypy

# Only what the demo needs (the package, hypercorn, httpx, an SMTP sink).
$(DEMO_INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $@

demo: $(DEMO_INSTALLED)
	$(BIN)/python -m examples.demo

clean:
	rm -rf $(VENV) .nox .coverage .mypy_cache .pytest_cache .ruff_cache site
