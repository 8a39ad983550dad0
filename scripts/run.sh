#!/usr/bin/env bash
# Fresh clone -> environment -> the default sweep's tables: bash scripts/run.sh [snakemake args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${VENV:-.venv}/bin/snakemake" --cores "${CORES:-2}" results/tables "$@"
