#!/usr/bin/env bash
# Fresh clone -> environment -> the default sweep's tables and figures:
#   bash scripts/run.sh [snakemake args]
# (snakemake --cores 2 results/tables: every study's tables and figures)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${VENV:-.venv}/bin/snakemake" --cores "${CORES:-2}" results/tables "$@"
