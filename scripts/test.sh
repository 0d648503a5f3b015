#!/usr/bin/env bash
# The test suite (CPU, a few minutes). Extra arguments go to pytest, e.g. `-m slow`.
source "$(dirname "$0")/_env.sh"
exec python -m pytest -q "$@"
