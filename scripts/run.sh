#!/usr/bin/env bash
# Fresh clone -> environment -> the default sweep's tables and figures:
#   bash scripts/run.sh [snakemake args]
# (snakemake --cores 2 results/tables, plus figures_all: figures and the ours-vs-paper table)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${VENV:-.venv}/bin/snakemake" --cores "${CORES:-2}" results/tables figures_all "$@"
