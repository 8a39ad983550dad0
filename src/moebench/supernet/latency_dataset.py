"""The latency dataset: random architectures of the space, measured on this machine, as CSV.

One row per measurement, written as it is taken (appended, flushed and fsynced), so a killed
job keeps every row it measured and the next run continues after the last complete row::

    row, pass, arch, <HAT's 10 raw features>, encoder_ms, decoder_ms, latency_ms,
    reference_ms, device, threads, torch

``pass`` 0 rows are the dataset (HAT: 2000 architectures); after them the first ``repeats``
architectures are measured again (``pass`` 1), at the end so that drift over the run counts,
and the pairs give the measurement's own run-to-run spread — the floor under any predictor's
error. A file measured on another device, thread count or torch version, or for other
architectures, is refused rather than extended.

``reference_ms`` (empty without ``measure.reference``) is the reference subnet's time taken
run for run beside the row's; :func:`dataset_arrays` and :func:`measurement_spread` then use
the drift-corrected latency ``latency_ms * calibration / reference_ms`` with the calibration
of :func:`calibration_ms` (the median reference time of the dataset rows).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
from tqdm import tqdm

from moebench.errors import RunError
from moebench.io import atomic_write_text
from moebench.supernet.space import FEATURE_NAMES, Arch, Space

log = logging.getLogger(__name__)
COLUMNS = ("row", "pass", "arch", *FEATURE_NAMES, "encoder_ms", "decoder_ms", "latency_ms",
           "reference_ms", "device", "threads", "torch")
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
                     "reference_ms": float(r["reference_ms"]) if r["reference_ms"] else None,
                     **{k: float(r[k]) for k in (*FEATURE_NAMES, "encoder_ms", "decoder_ms",
                                                 "latency_ms")}})
    return rows


def _check_existing(path: Path, rows: list[dict[str, Any]], space: Space, archs: list[Arch],
                    order: list[tuple[int, int]], machine: Mapping[str, Any],
                    reference: bool) -> None:
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
        if (r["reference_ms"] is not None) != reference:
            raise RunError(f"{path}: row {r['row']} was measured "
                           f"{'with' if r['reference_ms'] is not None else 'without'} a "
                           f"reference subnet, now {'with' if reference else 'without'}; "
                           f"delete it to measure again")


def build_latency_dataset(path: str | Path, space: Space, archs: list[Arch], repeats: int,
                          measure: Callable[[Arch], Mapping[str, Any]],
                          machine: Mapping[str, Any], reference: bool = False
                          ) -> list[dict[str, Any]]:
    """Measure every planned (row, pass) not yet in ``path``, appending each row as it is
    measured; returns all rows. ``measure(arch)`` gives ``encoder_ms``, ``decoder_ms`` and
    ``latency_ms`` (and ``reference_ms`` when ``reference``); ``machine`` the ``device``,
    ``threads`` and ``torch`` written per row."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, order = read_rows(path), plan(len(archs), repeats)
    _check_existing(path, rows, space, archs, order, machine, reference)
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
                      m["reference_ms"] if reference else "", *(machine[k] for k in MACHINE)]
            f.write(_line(values))
            f.flush()
            os.fsync(f.fileno())
    return read_rows(path)


def calibration_ms(rows: Sequence[Mapping[str, Any]]) -> Optional[float]:
    """The median reference time of the pass-0 rows (None without a reference): the machine
    speed every drift-corrected latency of this dataset, and of its gold checks, refers to."""
    refs = [r["reference_ms"] for r in rows if r["pass"] == 0]
    if not refs or any(v is None for v in refs):
        return None
    return float(np.median(refs))


def corrected_latency(rows: Sequence[Mapping[str, Any]],
                      calib: Optional[float] = None) -> list[float]:
    """Per row its latency (ms), drift-corrected when the rows carry reference times
    (``calib``: their :func:`calibration_ms`, computed here when not given)."""
    calib = calibration_ms(rows) if calib is None else calib
    if calib is None:
        return [float(r["latency_ms"]) for r in rows]
    return [float(r["latency_ms"]) * calib / float(r["reference_ms"]) for r in rows]


def dataset_arrays(rows: Sequence[Mapping[str, Any]]) -> tuple[list[Arch], np.ndarray, np.ndarray]:
    """(architectures, raw features [N, 10], latency [N] ms, drift-corrected when measured
    with a reference) of the pass-0 rows."""
    latency = corrected_latency(rows)
    first = [(r, lat) for r, lat in zip(rows, latency) if r["pass"] == 0]
    archs = [json.loads(r["arch"]) for r, _ in first]
    feats = np.array([[r[k] for k in FEATURE_NAMES] for r, _ in first], dtype=float)
    return archs, feats.reshape(len(first), len(FEATURE_NAMES)), np.array(
        [lat for _, lat in first], dtype=float)


def _spread(pairs: Sequence[tuple[float, float]]) -> tuple[float, float]:
    a, b = np.array(pairs, dtype=float).T
    return float(100 * np.mean(np.abs(b - a) / a)), float(np.sqrt(np.mean((b - a) ** 2)))


def measurement_spread(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Run-to-run spread of re-measured architectures: the MAPD (%) and RMSE (ms) of the
    repeat measurement taken as a prediction of the first, over the ``pairs`` re-measured
    (of the drift-corrected latencies when measured with a reference; ``mapd_uncorrected``
    is then the spread of the uncorrected ones)."""
    calib = calibration_ms(rows)
    latency = corrected_latency(rows, calib)
    first = {r["row"]: (lat, r["latency_ms"]) for r, lat in zip(rows, latency) if r["pass"] == 0}
    pairs = [(first[r["row"]], (lat, r["latency_ms"]))
             for r, lat in zip(rows, latency) if r["pass"] == 1]
    if not pairs:
        return {"pairs": 0, "mapd": None, "rmse_ms": None}
    mapd, rmse = _spread([(a[0], b[0]) for a, b in pairs])
    out = {"pairs": len(pairs), "mapd": mapd, "rmse_ms": rmse}
    if calib is not None:
        out["mapd_uncorrected"] = _spread([(a[1], b[1]) for a, b in pairs])[0]
    return out


def quantile_limits(latencies: np.ndarray, quantiles: Sequence[float]) -> list[float]:
    """Latency limits (ms) at the given quantiles of the measured distribution."""
    return [float(np.quantile(np.asarray(latencies, dtype=float), q)) for q in quantiles]
