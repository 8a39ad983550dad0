#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py): the CUDA tests and the CUDA benchmarks of
# the three studies in under 8 minutes, one JSON report (device, torch/CUDA versions, every
# figure) and a table. Run it after the README's setup (bash scripts/setup.sh):
#   bash scripts/gpu_check.sh [--out gpu_report.json] [--budget 450] [--smoke] [--parts a,b]
# Without CUDA it says so in one line and runs the CPU smoke check (exit 0 unless a part fails).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VENV:-.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac   # relative to the checkout, as setup.sh
if [ ! -x "$VENV/bin/python" ]; then
    echo "gpu_check: no environment at $VENV; run bash scripts/setup.sh first" >&2
    exit 2
fi
exec "$VENV/bin/python" "$ROOT/benchmarks/gpu_check.py" "$@"
