"""The latency dataset: random architectures of the space, measured on this machine, as CSV.

One row per measurement, written as it is taken (appended, flushed and fsynced), so a killed
job keeps every row it measured and the next run continues after the last complete row::

    row, pass, arch, <HAT's 10 raw features>, encoder_ms, decoder_ms, latency_ms,
    device, threads, torch

``pass`` 0 rows are the dataset (HAT: 2000 architectures); after them the first ``repeats``
architectures are measured again (``pass`` 1), at the end so that drift over the run counts,
and the pairs give the measurement's own run-to-run spread — the floor under any predictor's
error. A file measured on another device, thread count or torch version, or for other
architectures, is refused rather than extended.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from moebench.errors import RunError
from moebench.io import atomic_write_text
from moebench.supernet.space import FEATURE_NAMES, Arch, Space

log = logging.getLogger(__name__)
COLUMNS = ("row", "pass", "arch", *FEATURE_NAMES, "encoder_ms", "decoder_ms", "latency_ms",
           "device", "threads", "torch")
MACHINE = ("device", "threads", "torch")


def dataset_archs(space: Space, n: int, seed: int) -> list[Arch]:
    """The ``n`` random architectures of the dataset (HAT: ``get_random_config`` each)."""
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


def plan(n: int, repeats: int) -> list[tuple[int, int]]:
    """(row, pass) in measuring order: every row once, then the first ``repeats`` again."""
    return [(i, 0) for i in range(n)] + [(i, 1) for i in range(min(repeats, n))]


def _line(values: Sequence[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The complete rows of a dataset CSV (a cut last line is dropped from the file too)."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
        log.warning("%s: dropping a cut last line", path)
        atomic_write_text(path, text)
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        return []
    if tuple(reader.fieldnames) != COLUMNS:
        raise RunError(f"{path}: not a latency dataset of this version (columns "
                       f"{', '.join(reader.fieldnames)}); delete it to measure again")
    rows = []
    for r in reader:
        rows.append({**r, "row": int(r["row"]), "pass": int(r["pass"]),
                     "threads": int(r["threads"]),
                     **{k: float(r[k]) for k in (*FEATURE_NAMES, "encoder_ms", "decoder_ms",
                                                 "latency_ms")}})
    return rows


def _check_existing(path: Path, rows: list[dict[str, Any]], space: Space, archs: list[Arch],
                    order: list[tuple[int, int]], machine: Mapping[str, Any]) -> None:
    if len(rows) > len(order):
        raise RunError(f"{path}: {len(rows)} rows, more than the {len(order)} planned; "
                       f"delete it to measure again")
    for r, (i, p) in zip(rows, order):
        if (r["row"], r["pass"]) != (i, p) or r["arch"] != json.dumps(space.canonical(archs[i])):
            raise RunError(f"{path}: row {r['row']} (pass {r['pass']}) was measured for other "
                           f"params (architectures, seed or size); delete it to measure again")
        for key in MACHINE:
            if str(r[key]) != str(machine[key]):
                raise RunError(f"{path}: measured with {key} = {r[key]}, now {machine[key]}; "
                               f"a dataset mixes no machines (delete it to measure again)")


def build_latency_dataset(path: str | Path, space: Space, archs: list[Arch], repeats: int,
                          measure: Callable[[Arch], Mapping[str, Any]],
                          machine: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Measure every planned (row, pass) not yet in ``path``, appending each row as it is
    measured; returns all rows. ``measure(arch)`` gives ``encoder_ms``, ``decoder_ms`` and
    ``latency_ms``; ``machine`` the ``device``, ``threads`` and ``torch`` written per row."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, order = read_rows(path), plan(len(archs), repeats)
    _check_existing(path, rows, space, archs, order, machine)
    if rows:
        log.info("%s: resuming after %d measured rows", path, len(rows))
    with open(path, "a", encoding="utf-8") as f:
        if not rows:
            f.write(_line(COLUMNS))
        for i, p in tqdm(order[len(rows):], desc="latency dataset", unit="arch", disable=None):
            arch = space.canonical(archs[i])
            m = measure(arch)
            values = [i, p, json.dumps(arch), *space.raw_features(arch).tolist(),
                      m["encoder_ms"], m["decoder_ms"], m["latency_ms"],
                      *(machine[k] for k in MACHINE)]
            f.write(_line(values))
            f.flush()
            os.fsync(f.fileno())
    return read_rows(path)


def dataset_arrays(rows: Sequence[Mapping[str, Any]]) -> tuple[list[Arch], np.ndarray, np.ndarray]:
    """(architectures, raw features [N, 10], latency [N] ms) of the pass-0 rows."""
    first = [r for r in rows if r["pass"] == 0]
    archs = [json.loads(r["arch"]) for r in first]
    feats = np.array([[r[k] for k in FEATURE_NAMES] for r in first], dtype=float)
    return archs, feats.reshape(len(first), len(FEATURE_NAMES)), np.array(
        [r["latency_ms"] for r in first], dtype=float)


def measurement_spread(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Run-to-run spread of re-measured architectures: the MAPD (%) and RMSE (ms) of the
    repeat measurement taken as a prediction of the first, over the ``pairs`` re-measured."""
    first = {r["row"]: r["latency_ms"] for r in rows if r["pass"] == 0}
    pairs = [(first[r["row"]], r["latency_ms"]) for r in rows if r["pass"] == 1]
    if not pairs:
        return {"pairs": 0, "mapd": None, "rmse_ms": None}
    a, b = np.array(pairs).T
    return {"pairs": len(pairs), "mapd": float(100 * np.mean(np.abs(b - a) / a)),
            "rmse_ms": float(np.sqrt(np.mean((b - a) ** 2)))}


def quantile_limits(latencies: np.ndarray, quantiles: Sequence[float]) -> list[float]:
    """Latency limits (ms) at the given quantiles of the measured distribution."""
    return [float(np.quantile(np.asarray(latencies, dtype=float), q)) for q in quantiles]
