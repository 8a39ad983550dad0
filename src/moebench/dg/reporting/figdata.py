"""The numbers behind each figure, as tidy :class:`pandas.DataFrame` tables (one CSV each).

Every accuracy here comes from :mod:`moebench.dg.reporting.tables` (a :class:`Report`), so a
figure's CSV shows exactly the tables' numbers: means and standard errors are in percent,
computed by :class:`~moebench.dg.reporting.tables.Cell` (DomainBed's ``np.std(x / sqrt(n))``).

* :func:`accuracy_frame` — per test domain (and ``Avg``) of one dataset, per algorithm.
* :func:`bubble_frame` — per dataset and algorithm: step time, peak memory, accuracy.
* :func:`curves_frame` — validation/test accuracy vs step, mean over trial seeds.
* :func:`expert_load_frame` — per MoE layer, expert loads (ranked) and dropped fraction.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from moebench.errors import DataError
from moebench.dg.reporting.tables import Cell, MethodResults, Report
from moebench.dg.selection import count_envs, is_single

AVG = "Avg"
Record = Mapping[str, Any]


def method_results(report: Report, selection: str) -> MethodResults:
    """The results of one selection method (``iid``, ``lodo`` or ``oracle``) in ``report``."""
    for result in report.methods:
        if result.method.slug == selection:
            return result
    valid = ", ".join(r.method.slug for r in report.methods)
    raise DataError(f"unknown selection method {selection!r}; valid: {valid}")


def _dataset_table(result: MethodResults, dataset: str):
    for table in result.datasets:
        if table.key == dataset:
            return table
    valid = ", ".join(t.key for t in result.datasets)
    raise DataError(f"unknown dataset {dataset!r}; datasets in the records: {valid}")


def _round(value: float | None) -> float:
    return float("nan") if value is None else round(float(value), 4)


def averages_cell(result: MethodResults, algorithm: str, dataset: str) -> Cell:
    """The Averages-table cell of (algorithm, dataset): per-trial mean over test envs."""
    row = next(r for r in result.averages.rows if r.algorithm == algorithm)
    return row.cells[result.averages.columns.index(dataset)]


def accuracy_frame(report: Report, dataset: str, selection: str = "iid") -> pd.DataFrame:
    """Columns ``dataset, selection, algorithm, domain, mean, err, n`` (percent).

    One row per algorithm and test domain (cells of the dataset's table), then ``domain = Avg``
    from the Averages table (mean ± s.e. over trials of the per-trial average). Missing
    cells are NaN.
    """
    result = method_results(report, selection)
    table = _dataset_table(result, dataset)
    rows = []
    for row in table.rows:
        cells = list(zip(table.columns, row.cells))
        cells.append((AVG, averages_cell(result, row.algorithm, dataset)))
        for domain, cell in cells:
            rows.append({"dataset": dataset, "selection": selection, "algorithm": row.algorithm,
                         "domain": domain, "mean": _round(cell.mean), "err": _round(cell.err),
                         "n": len(cell.values)})
    return pd.DataFrame(rows, columns=["dataset", "selection", "algorithm", "domain", "mean",
                                       "err", "n"])


def _run_key(record: Record) -> tuple:
    return (record["dataset"], record["algorithm"], record["trial_seed"],
            record["hparams_seed"], tuple(record["test_envs"]))


def run_costs(records: Iterable[Record]) -> pd.DataFrame:
    """Per single-test-env run: mean ``step_time`` (s, the update's compute per step) and
    ``data_time`` (s, the wait for its minibatches; NaN in records without it) over its
    checkpoints after step 0 (step 0's window is one warm-up step) and peak ``mem_gb``
    (max over checkpoints).

    Columns ``dataset, algorithm, step_time, data_time, mem_gb``; runs without timings are
    left out.
    """
    per_run: dict[tuple, list[Record]] = {}
    for record in records:
        if is_single(record) and record.get("step_time") is not None:
            per_run.setdefault(_run_key(record), []).append(record)
    rows = []
    for key, recs in per_run.items():
        later = [r for r in recs if r["step"] > 0] or recs
        mems = [float(r["mem_gb"]) for r in recs if r.get("mem_gb") is not None]
        waits = [float(r["data_time"]) for r in later if r.get("data_time") is not None]
        rows.append({"dataset": key[0], "algorithm": key[1],
                     "step_time": float(np.mean([float(r["step_time"]) for r in later])),
                     "data_time": float(np.mean(waits)) if waits else float("nan"),
                     "mem_gb": max(mems) if mems else float("nan")})
    return pd.DataFrame(rows, columns=["dataset", "algorithm", "step_time", "data_time", "mem_gb"])


def bubble_frame(records: Sequence[Record], report: Report, selection: str = "iid") -> pd.DataFrame:
    """One row per dataset and algorithm: ``step_time`` and ``data_time`` (s/step, means over
    single-test-env runs; see :func:`run_costs`), ``mem_gb`` (mean over runs of each run's peak), ``accuracy``/``accuracy_err``
    (Averages-table cell, percent) and ``n_runs``."""
    result = method_results(report, selection)
    costs = run_costs(records)
    rows = []
    for dataset in report.environments:
        for algorithm in report.algorithms:
            runs = costs[(costs.dataset == dataset) & (costs.algorithm == algorithm)]
            cell = averages_cell(result, algorithm, dataset)
            if runs.empty and not cell.values:
                continue
            rows.append({"dataset": dataset, "algorithm": algorithm, "selection": selection,
                         "step_time": _round(runs.step_time.mean()) if len(runs) else np.nan,
                         "data_time": _round(runs.data_time.mean()) if len(runs) else np.nan,
                         "mem_gb": _round(runs.mem_gb.mean()) if len(runs) else np.nan,
                         "accuracy": _round(cell.mean), "accuracy_err": _round(cell.err),
                         "n_runs": len(runs)})
    return pd.DataFrame(rows, columns=["dataset", "algorithm", "selection", "step_time",
                                       "data_time", "mem_gb", "accuracy", "accuracy_err",
                                       "n_runs"])


def _val_test(record: Record) -> tuple[float, float]:
    """Training-domain validation (mean out-split acc of training envs) and test accuracy."""
    test_env = record["test_envs"][0]
    train = [i for i in range(count_envs(record)) if i != test_env]
    val = float(np.mean([record[f"env{i}_out_acc"] for i in train])) if train else float("nan")
    return val, float(record[f"env{test_env}_in_acc"])


def curves_frame(records: Sequence[Record], report: Report, dataset: str,
                 selection: str = "iid") -> pd.DataFrame:
    """Accuracy vs step of the single-test-env runs whose hparams ``selection`` chose.

    Columns ``dataset, selection, algorithm, test_env, step, val_mean, val_err, test_mean,
    test_err, n`` (percent; mean ± s.e. over trial seeds). ``val`` is training-domain
    validation accuracy, ``test`` the test domain's accuracy; ``test_env`` is its label.
    """
    result = method_results(report, selection)
    labels = report.environments[dataset]
    chosen = {(s.trial_seed, s.algorithm, s.test_env): s.hparams_seed
              for s in result.selections if s.dataset == dataset}
    points: dict[tuple[str, int, int], list[tuple[float, float]]] = {}
    for r in records:
        if r["dataset"] != dataset or not is_single(r):
            continue
        if chosen.get((r["trial_seed"], r["algorithm"], r["test_envs"][0])) != r["hparams_seed"]:
            continue
        points.setdefault((r["algorithm"], r["test_envs"][0], r["step"]), []).append(_val_test(r))
    order = {a: i for i, a in enumerate(report.algorithms)}
    rows = []
    for (algorithm, env, step) in sorted(points, key=lambda k: (order.get(k[0], 99), k[1], k[2])):
        vals, tests = zip(*points[(algorithm, env, step)])
        val, test = Cell(tuple(vals)), Cell(tuple(tests))
        rows.append({"dataset": dataset, "selection": selection, "algorithm": algorithm,
                     "test_env": labels[env], "step": step, "val_mean": _round(val.mean),
                     "val_err": _round(val.err), "test_mean": _round(test.mean),
                     "test_err": _round(test.err), "n": len(tests)})
    return pd.DataFrame(rows, columns=["dataset", "selection", "algorithm", "test_env", "step",
                                       "val_mean", "val_err", "test_mean", "test_err", "n"])


EXPERT_COLUMNS = ["dataset", "selection", "algorithm", "layer", "trial_seed", "test_env",
                  "step", "n_experts", "expert_rank", "load_pct", "dropped_pct",
                  "active_experts"]


def expert_load_frame(report: Report, dataset: str, selection: str = "iid") -> pd.DataFrame:
    """Routing statistics at the checkpoints chosen by ``selection`` (as ``routing.csv``).

    One row per selected checkpoint, MoE layer and expert: experts are ranked by load
    (rank 1 = busiest; expert identities differ between runs, ranks compare), ``load_pct``
    is the expert's share of routed (token, expert) pairs, ``dropped_pct`` the layer's
    share of pairs dropped by capacity, ``active_experts`` (MASS) NaN when not recorded.
    """
    result = method_results(report, selection)
    labels = report.environments[dataset]
    rows = []
    for s in result.selections:
        if s.dataset != dataset:
            continue
        for layer, stats in (s.record.get("routing") or {}).items():
            loads = sorted((float(v) for v in stats.get("load") or []), reverse=True)
            dropped = stats.get("dropped")
            active = stats.get("active_experts")
            for rank, load in enumerate(loads, start=1):
                rows.append({
                    "dataset": dataset, "selection": selection, "algorithm": s.algorithm,
                    "layer": layer, "trial_seed": s.trial_seed, "test_env": labels[s.test_env],
                    "step": s.step, "n_experts": len(loads), "expert_rank": rank,
                    "load_pct": _round(100.0 * load),
                    "dropped_pct": np.nan if dropped is None else _round(100.0 * float(dropped)),
                    "active_experts": np.nan if active is None else float(active)})
    return pd.DataFrame(rows, columns=EXPERT_COLUMNS)
