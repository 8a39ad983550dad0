"""Collect run records into one normalised ``records.jsonl``.

    python -m moebench.cli.dg.collect --runs-file results/runs/done.txt --out results/records.jsonl
    python -m moebench.cli.dg.collect --input_dir SWEEP [SWEEP2 ...] --out records.jsonl
    python -m moebench.cli.dg.collect --plan results/sweep/plan.json --out results/records.jsonl

``--runs-file`` lists run directories one per line (as the train stage's markers do);
``--plan`` takes every run directory of a sweep plan (``moebench.dg.sweep.write_plan``);
``--input_dir`` searches directories recursively for ``results.jsonl`` — a DomainBed sweep
(``SWEEP/<hash>/results.jsonl``) or our ``results/runs/<dataset>/<algorithm>/<id>/``. Records
are read, never paths; the output is written atomically, one record per line.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from moebench.errors import DataError
from moebench.cli.common import run_cli

logger = logging.getLogger("moebench.cli.dg.collect")
PROG = "moebench.cli.dg.collect"


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs-file", nargs="+", metavar="FILE",
                     help="text file(s) listing run directories, one per line")
    src.add_argument("--plan", metavar="FILE", help="sweep plan JSON: collect all its runs")
    src.add_argument("--input_dir", "--input-dir", dest="input_dir", nargs="+", metavar="DIR",
                     help="sweep directories searched recursively for results.jsonl")
    p.add_argument("--out", required=True, help="output records.jsonl")
    p.add_argument("--require-done", action="store_true",
                   help="skip runs whose directory has no 'done' marker")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def runs_from_plan(path: str) -> list[Path]:
    """Run directories of every batch of a sweep plan, in batch order."""
    from moebench.dg.sweep import read_plan

    if not Path(path).is_file():
        raise DataError(f"sweep plan not found: {path}")
    batches = read_plan(path).get("batches")
    if not isinstance(batches, dict):
        raise DataError(f"sweep plan {path} has no 'batches' mapping")
    return [Path(run["run_dir"]) for key in sorted(batches) for run in batches[key]]


def collect(args: argparse.Namespace) -> int:
    """Load, normalise and write the records; errors are raised as ValueError/FileNotFoundError."""
    from moebench.io import atomic_write_jsonl as write_jsonl_atomic
    from moebench.dg.reporting.records import find_results_files, load_runs, read_runs_file

    if args.runs_file:
        runs = [run for path in args.runs_file for run in read_runs_file(path)]
        where = ", ".join(args.runs_file)
    elif args.plan:
        runs, where = runs_from_plan(args.plan), args.plan
    else:
        runs = [found for directory in args.input_dir for found in find_results_files(directory)]
        where = ", ".join(args.input_dir)
    records = load_runs(runs, require_done=args.require_done)
    if not records:
        raise DataError(f"no records found in {where}")
    write_jsonl_atomic(Path(args.out), records)
    logger.info("collected %d records into %s", len(records), args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 with a one-line error on bad input)."""
    return run_cli(argv, parse, collect, PROG)


if __name__ == "__main__":
    sys.exit(main())
