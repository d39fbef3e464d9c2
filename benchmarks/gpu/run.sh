#!/usr/bin/env bash
# Issue 15's GPU measurements in one command, on a bare offline GPU machine (see docs/gpu.md):
#
#   OUT=/path/to/results bash benchmarks/gpu/run.sh [--dry-run] [run.py options, see --help]
#
# Installs the carried wheels (benchmarks/gpu/carry/, made by build_carry.py) into a target folder, then
# runs every step with a time budget each, inside one deadline (under 8 minutes on a GPU), and prints one
# table; $OUT gets gpu_run.json, gpu_run.md and gpu_run.log. Without CUDA (or with --dry-run) it is a dry
# run on CPU at tiny shapes. PYTHON picks the interpreter (default: python3, the GPU image's torch one).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "${PYTHON:-python3}" "$here/run.py" "$@"
