"""Train HAT's latency predictor on the latency dataset; score it against the least-squares
linear baseline and the measurement's run-to-run spread.

    python -m moebench.cli.supernet.predictor --space JSON --predictor JSON \\
        --dataset results/supernet/latency/dataset.csv \\
        --model results/supernet/latency/predictor.pt \\
        --report results/supernet/latency/predictor.json \\
        --predictions results/supernet/latency/predictions.csv

``--report``: rows per split, RMSE (ms) and MAPD (%) of the MLP, the linear baseline and the
train mean on the held-out test part, the spread, and whether the issue's targets hold
(MLP MAPD <= linear; <= 1.5 x spread). ``--predictions``: every row's measured and predicted
latency with its split (the scatter figure's data).
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import sys
from typing import Optional, Sequence

import numpy as np

from moebench.cli.common import OneLineParser, run_parser
from moebench.errors import RunError
from moebench.io import atomic_write_json, atomic_write_text
from moebench.supernet import search_io
from moebench.supernet.search_params import PredictorSpec
from moebench.supernet.space import Space

PROG = "moebench.cli.supernet.predictor"
log = logging.getLogger(PROG)


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--space", required=True, help="supernet.space as JSON (or @FILE)")
    p.add_argument("--predictor", required=True, help="supernet.predictor as JSON (or @FILE)")
    p.add_argument("--dataset", required=True, help="latency dataset CSV")
    p.add_argument("--model", required=True, help="where the trained predictor goes (.pt)")
    p.add_argument("--report", required=True, help="JSON report")
    p.add_argument("--predictions", required=True, help="CSV of measured vs predicted")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def targets(report: dict) -> dict:
    """The issue's predictor targets: held-out MAPD <= the linear baseline's and <= 1.5 x the
    measurement spread (None when no rows were re-measured)."""
    mlp, lin = report["test"]["mlp"]["mapd"], report["test"]["linear"]["mapd"]
    spread = report["spread"]["mapd"]
    return {"mapd_le_linear": bool(mlp <= lin),
            "mapd_within_1.5x_spread": None if spread is None else bool(mlp <= 1.5 * spread),
            "mapd_over_spread": None if not spread else mlp / spread}


def _predictions_csv(rows_index: np.ndarray, split: np.ndarray, y: np.ndarray,
                     mlp: np.ndarray, lin: np.ndarray) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", "split", "measured_ms", "mlp_ms", "linear_ms"])
    for r, s, a, b, c in zip(rows_index, split, y, mlp, lin):
        w.writerow([int(r), s, f"{a:.6g}", f"{b:.6g}", f"{c:.6g}"])
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    from moebench.supernet.latency_dataset import dataset_arrays, measurement_spread, read_rows
    import torch

    from moebench.supernet.predictor import fit_and_report, split_indices

    torch.set_num_threads(max(1, args.threads))
    space = Space.from_params(search_io.json_arg(args.space, "--space"))
    spec = PredictorSpec.from_params(search_io.json_arg(args.predictor, "--predictor"))
    rows = read_rows(args.dataset)
    if not rows:
        raise RunError(f"{args.dataset}: no latency rows")
    _, raw, y = dataset_arrays(rows)
    x = raw / np.asarray(space.feature_norm)
    mlp, linear, report = fit_and_report(x, y, spec)
    report["spread"] = measurement_spread(rows)
    report["targets"] = targets(report)
    report["feature_norm"] = list(space.feature_norm)
    mlp.save(args.model)
    atomic_write_json(args.report, report)
    split = np.empty(len(y), dtype=object)
    for name, idx in zip(("train", "valid", "test"), split_indices(len(y), spec.split, spec.seed)):
        split[idx] = name
    atomic_write_text(args.predictions, _predictions_csv(np.arange(len(y)), split, y,
                                                         mlp.predict(x), linear.predict(x)))
    t, s = report["test"], report["spread"]
    log.info("held-out test (%d rows): MLP RMSE %.3f ms MAPD %.2f %% | linear RMSE %.3f ms "
             "MAPD %.2f %% | spread MAPD %s %%", report["rows"]["test"], t["mlp"]["rmse_ms"],
             t["mlp"]["mapd"], t["linear"]["rmse_ms"], t["linear"]["mapd"],
             "n/a" if s["mapd"] is None else f"{s['mapd']:.2f}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_parser(argv, parser(), run)


if __name__ == "__main__":
    sys.exit(main())
