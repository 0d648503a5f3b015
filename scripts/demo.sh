#!/usr/bin/env bash
# The main job: make the synthetic Visium HD slide, fit PixNet on its 16 um bins,
# predict 8 and 2 um bins, evaluate, and write figures to ./demo_output.
source "$(dirname "$0")/_env.sh"
exec pixnet demo --out "${1:-demo_output}" "${@:2}"
