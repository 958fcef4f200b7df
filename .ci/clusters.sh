#!/usr/bin/env bash
# What the cluster tests (pytest -m cluster: tests/compare/test_executors_ray.py and _slurm.py) need:
# Ray and submitit in the Python environment that runs the tests (fmclf's extras ray and slurm), and
# Debian's slurm-wlm and munge for the single-node SLURM test (the test starts munged, slurmctld and
# slurmd itself, as root, with its own files and ports). Idempotent: quick when all is installed.
#
# Usage: .ci/clusters.sh [VENV]   (default .venv, created when missing; the README's test command
# then reuses it), followed by FMCLF_REQUIRE_CLUSTER=1 so a missing piece fails the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}

if ! command -v sbatch >/dev/null || [ ! -x /usr/sbin/slurmctld ] || [ ! -x /usr/sbin/munged ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge || { apt-get update && apt-get install -y -q slurm-wlm munge; }
fi

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c 'import ray, submitit' 2>/dev/null; then
    "$venv/bin/pip" install -q -e '.[ray,slurm]'
fi
