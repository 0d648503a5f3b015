#!/usr/bin/env bash
# The test suite (CPU; 15-33 min on 2 cores; slow, docs and gpu tests deselected, see pyproject.toml). Extra arguments go to pytest, e.g. `-m slow`.
source "$(dirname "$0")/_env.sh"
exec python -m pytest -q "$@"
