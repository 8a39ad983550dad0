"""Result tables in DomainBed's layout, computed from normalised records.

For each selection method: one table per dataset (rows = algorithms, one column per test env,
then ``Avg``) whose cells are the mean and standard error over trial seeds of the selected
model's test accuracy, then an ``Averages`` table (per algorithm x dataset: the test accuracy
averaged over test envs within each trial, then mean and standard error over trials; last
column the mean over datasets). Numbers are percentages; ``None`` marks a missing cell (``X``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from moebench.dg.reporting.records import Record
from moebench.dg.selection import SELECTION_METHODS, Selection, SelectionMethod, select_all
from moebench.dg.study import declarations

logger = logging.getLogger(__name__)

#: Default algorithm row order: the order of the declarations; others follow alphabetically.
DEFAULT_ALGORITHM_ORDER: tuple[str, ...] = tuple(declarations())

#: DomainBed's dataset order; other datasets follow alphabetically.
DOMAINBED_DATASET_ORDER: tuple[str, ...] = (
    "Debug28", "Debug224", "ColoredMNIST", "RotatedMNIST", "VLCS", "PACS", "OfficeHome",
    "TerraIncognita", "DomainNet", "SVIRO",
)


@dataclass(frozen=True)
class Cell:
    """Test accuracies (fractions) of one table cell, one value per trial seed."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float | None:
        """Mean in percent, or None for an empty cell."""
        return 100.0 * float(np.mean(self.values)) if self.values else None

    @property
    def err(self) -> float | None:
        """Standard error in percent: population std / sqrt(n) (DomainBed's ``np.std`` use)."""
        if not self.values:
            return None
        data = np.asarray(self.values, dtype=float)
        return 100.0 * float(np.std(data / np.sqrt(len(data))))


@dataclass(frozen=True)
class TableRow:
    """One algorithm's cells and the row average (percent; None when any cell is missing)."""

    algorithm: str
    cells: tuple[Cell, ...]
    avg: float | None


@dataclass(frozen=True)
class ResultTable:
    """One table: ``key`` is the dataset name, or ``"averages"`` for the Averages table."""

    method_slug: str
    key: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[TableRow, ...]


@dataclass(frozen=True)
class MethodResults:
    """Every table of one selection method plus the selections they came from."""

    method: type[SelectionMethod]
    datasets: tuple[ResultTable, ...]
    averages: ResultTable
    selections: tuple[Selection, ...]


@dataclass(frozen=True)
class Report:
    """All tables of a set of records."""

    total_records: int
    algorithms: tuple[str, ...]
    environments: Mapping[str, tuple[str, ...]]  # dataset -> env labels, in table order
    methods: tuple[MethodResults, ...]
    diverged: Mapping[str, int] = None  # type: ignore[assignment]  # algorithm -> runs

    def __post_init__(self) -> None:
        if self.diverged is None:
            object.__setattr__(self, "diverged", {})


def order_algorithms(names: Iterable[str], preferred: Sequence[str] = DEFAULT_ALGORITHM_ORDER) -> list[str]:
    """Algorithms in ``preferred`` order (matched case-insensitively), then the rest sorted."""
    names = sorted(set(names))
    rank = {name.lower(): i for i, name in enumerate(preferred)}
    first = sorted((n for n in names if n.lower() in rank), key=lambda n: (rank[n.lower()], n))
    return first + [n for n in names if n.lower() not in rank]


def order_datasets(names: Iterable[str]) -> list[str]:
    """Datasets in DomainBed's order, then the others alphabetically."""
    names = set(names)
    known = [d for d in DOMAINBED_DATASET_ORDER if d in names]
    return known + sorted(names - set(known))


def dataset_environments(records: Iterable[Record]) -> dict[str, tuple[str, ...]]:
    """Env labels of each dataset, from its first record (a disagreeing record is logged)."""
    labels: dict[str, tuple[str, ...]] = {}
    for record in records:
        envs = tuple(record["environments"])
        seen = labels.setdefault(record["dataset"], envs)
        if seen != envs:
            logger.warning("dataset %s: records disagree on environments %s vs %s; using %s",
                           record["dataset"], seen, envs, seen)
    return labels


def _row_average(cells: Sequence[Cell]) -> float | None:
    """Mean of the cells' means, or None if any cell is empty (or there are none)."""
    means = [cell.mean for cell in cells]
    if not means or any(m is None for m in means):
        return None
    return sum(means) / len(means)  # type: ignore[arg-type]


def dataset_table(selections: Sequence[Selection], method: type[SelectionMethod], dataset: str,
                  labels: Sequence[str], algorithms: Sequence[str]) -> ResultTable:
    """Per-test-env table of one dataset: cell (algorithm, t) = selected test acc per trial."""
    rows = []
    for algorithm in algorithms:
        cells = []
        for test_env in range(len(labels)):
            chosen = [s for s in selections if (s.dataset, s.algorithm, s.test_env)
                      == (dataset, algorithm, test_env)]
            chosen.sort(key=lambda s: s.trial_seed)
            cells.append(Cell(tuple(s.test_acc for s in chosen)))
        rows.append(TableRow(algorithm, tuple(cells), _row_average(cells)))
    title = f"Dataset: {dataset}, model selection method: {method.name}"
    return ResultTable(method.slug, dataset, title, tuple(labels), tuple(rows))


def _trial_averages(selections: Sequence[Selection], algorithm: str, dataset: str) -> Cell:
    """Per trial seed, the test accuracy averaged over the test envs selected in that trial."""
    per_trial: dict[int, list[float]] = {}
    for s in selections:
        if (s.algorithm, s.dataset) == (algorithm, dataset):
            per_trial.setdefault(s.trial_seed, []).append(s.test_acc)
    return Cell(tuple(float(np.mean(per_trial[t])) for t in sorted(per_trial)))


def averages_table(selections: Sequence[Selection], method: type[SelectionMethod],
                   datasets: Sequence[str], algorithms: Sequence[str]) -> ResultTable:
    """The Averages table: rows = algorithms, one column per dataset, then ``Avg``."""
    rows = []
    for algorithm in algorithms:
        cells = [_trial_averages(selections, algorithm, d) for d in datasets]
        rows.append(TableRow(algorithm, tuple(cells), _row_average(cells)))
    title = f"Averages, model selection method: {method.name}"
    return ResultTable(method.slug, "averages", title, tuple(datasets), tuple(rows))


def diverged_runs(records: Iterable[Record]) -> dict[str, int]:
    """Per algorithm, the number of runs that ended with a ``"diverged": true`` record."""
    runs: dict[str, set] = {}
    for r in records:
        if r.get("diverged"):
            key = (r["dataset"], tuple(r["test_envs"]), r["trial_seed"], r["hparams_seed"])
            runs.setdefault(r["algorithm"], set()).add(key)
    return {algorithm: len(keys) for algorithm, keys in runs.items()}


def build_report(records: Sequence[Record],
                 algorithm_order: Sequence[str] = DEFAULT_ALGORITHM_ORDER,
                 methods: Sequence[type[SelectionMethod]] = SELECTION_METHODS) -> Report:
    """Run every selection method on ``records`` and build all tables."""
    algorithms = order_algorithms((r["algorithm"] for r in records), algorithm_order)
    envs = dataset_environments(records)
    datasets = order_datasets(envs)
    results = []
    for method in methods:
        selections = select_all(records, method)
        tables = tuple(dataset_table(selections, method, d, envs[d], algorithms) for d in datasets)
        averages = averages_table(selections, method, datasets, algorithms)
        results.append(MethodResults(method, tables, averages, tuple(selections)))
    ordered_envs = {d: envs[d] for d in datasets}
    return Report(len(records), tuple(algorithms), ordered_envs, tuple(results),
                  diverged_runs(records))
