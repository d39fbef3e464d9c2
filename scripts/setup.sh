#!/usr/bin/env bash
# Sets up .venv with minprot-ds and what its tests need, on a machine with only Python 3.11 and pip.
# Safe to rerun: what is already installed is kept.
# --with-mmseqs also installs MMseqs2 (Debian package mmseqs2), which the task-dataset tests use;
# --with-slurm also installs Slurm and MUNGE (slurm-wlm, munge), which the Slurm test starts on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
apt_packages=()
for flag in "$@"; do
  case "$flag" in
    --with-mmseqs) command -v mmseqs >/dev/null 2>&1 || apt_packages+=(mmseqs2) ;;
    --with-slurm) { command -v slurmctld && command -v munged; } >/dev/null 2>&1 || apt_packages+=(slurm-wlm munge) ;;
    *) echo "setup: unknown flag $flag (known: --with-mmseqs, --with-slurm)" >&2; exit 2 ;;
  esac
done
if [[ ${#apt_packages[@]} -gt 0 ]]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_packages[@]}" >/dev/null
  else
    echo "setup: no apt-get here; install ${apt_packages[*]} yourself (MMseqs2: https://github.com/soedinglab/MMseqs2; Slurm: https://slurm.schedmd.com) for the tests that need them" >&2
  fi
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    # GPU machines: the CUDA build pip picks by default (V100 users: see docs/gpu.md).
    "${PIP[@]}" "torch>=2.4,<2.15"
  else
    # No GPU: the CPU build (a plain `torch` would pull a multi-GB CUDA build).
    "${PIP[@]}" torch==2.13.0
  fi
fi
"${PIP[@]}" -e ".[test]"
