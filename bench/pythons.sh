#!/usr/bin/env bash
# make bench: bench/run.py once per Python named in the arguments, each in a
# venv of its own, so every Python's results land side by side.
#
# A Python is named by its version ("3.13" or "python3.13": pyenv's latest
# 3.13 where pyenv has one, else python3.13 on PATH), by another command or
# by a path. Its venv is .venv when .venv exists and runs that same X.Y,
# else .venv-X.Y (created on first use; it holds a .gitignore that ignores
# it). .venv itself is left to `make install`.
# BENCH_QUICK and BENCH_ONLY reach bench/run.py through the environment.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
    local name=$1 version=${1#python} latest
    if [[ $version =~ ^[0-9]+\.[0-9]+$ ]]; then
        if command -v pyenv >/dev/null 2>&1 && latest=$(pyenv latest "$version" 2>/dev/null); then
            echo "$(pyenv prefix "$latest")/bin/python"
            return
        fi
        name=python$version
    fi
    # pyenv's shims are on PATH even for versions they cannot run here
    command -v "$name" && "$name" -c '' 2>/dev/null
}

minor_of() {
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'
}

# Find every Python first: a missing one fails before minutes of benchmarks.
pythons=()
for name in "$@"; do
    if ! python=$(find_python "$name"); then
        echo "bench: no Python '$name' (pyenv install it, or set BENCH_PYTHONS or PYTHON)" >&2
        exit 1
    fi
    pythons+=("$python")
done

for python in "${pythons[@]}"; do
    minor=$(minor_of "$python")
    venv=.venv
    if [[ ! -x .venv/bin/python || $(minor_of .venv/bin/python) != "$minor" ]]; then
        venv=.venv-$minor
    fi
    if [[ ! -x $venv/bin/python ]]; then
        "$python" -m venv "$venv"
        echo '*' >"$venv/.gitignore"
    fi
    if [[ ! $venv/.bench-installed -nt pyproject.toml ]]; then
        "$venv/bin/python" -m pip install --quiet --upgrade pip
        "$venv/bin/python" -m pip install --quiet -e '.[test,bench]'
        touch "$venv/.bench-installed"
    fi
    echo "bench: Python $minor ($venv/bin/python)"
    "$venv/bin/python" -m bench.run
done
