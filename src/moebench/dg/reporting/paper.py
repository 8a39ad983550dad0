"""Ours vs paper: published numbers (``params/dg/paper_numbers.yaml``) next to our results.

:func:`load_paper_numbers` flattens the file into :class:`PaperNumber` entries (dataset, test
domain or ``avg``, selection method, algorithm, mean, err, source). :func:`compare` fills,
for each entry, our number from the tables of the records that match the entry's
hyperparameter filter (``match``: e.g. the backbone), the difference ``ours - paper`` and a
``reduced`` mark; datasets we ran that have no published numbers get ``n/a`` rows.
Rendering (CSV, markdown, LaTeX) lives in :mod:`moebench.dg.reporting.paper_render`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from moebench.errors import DataError, ParamsError
from moebench.dg.reporting.records import Record
from moebench.dg.reporting.tables import Cell, Report, build_report
from moebench.dg.selection import SELECTION_METHODS

logger = logging.getLogger(__name__)

AVG = "avg"
AVERAGE = "average"  # the cross-dataset average column of a paper table
SOURCE_KEYS = ("paper", "table", "commit")


class PaperNumbersError(ParamsError):
    """A paper-numbers file that cannot be used; the message names the table and key."""


@dataclass(frozen=True)
class PaperNumber:
    """One published number (percent) and where it comes from."""

    table: str
    dataset: str
    domain: str                  # a test-domain label, or "avg" (mean over test domains)
    selection: str
    algorithm: str
    label: str                   # the paper's row name
    mean: float
    err: float | None
    source: Mapping[str, Any] = field(compare=False)
    match: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    average_over: tuple[str, ...] = ()  # dataset == "average": the datasets averaged


@dataclass(frozen=True)
class Comparison:
    """A row of the ours-vs-paper table (``paper`` None: no published number, n/a)."""

    dataset: str
    domain: str
    selection: str
    algorithm: str
    ours: Cell | None
    ours_mean: float | None
    paper: PaperNumber | None
    reduced: str = ""
    steps: int | None = None

    @property
    def diff(self) -> float | None:
        """ours - paper (percentage points), None when either is missing."""
        if self.ours_mean is None or self.paper is None:
            return None
        return self.ours_mean - self.paper.mean


def _mean_err(value: Any, where: str) -> tuple[float, float | None]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value), None
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], (int, float)):
        return float(value[0]), None if value[1] is None else float(value[1])
    raise PaperNumbersError(f"{where}: expected a number or [mean, err], got {value!r}")


def _match(spec: Any, where: str) -> dict[str, tuple[Any, ...]]:
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise PaperNumbersError(f"{where}.match: expected a mapping, got {spec!r}")
    return {str(k): tuple(v) if isinstance(v, list) else (v,) for k, v in spec.items()}


def _source(table: Mapping[str, Any], name: str) -> dict[str, Any]:
    source = table.get("source")
    if not isinstance(source, Mapping):
        raise PaperNumbersError(f"tables.{name}: no 'source' mapping")
    for key in SOURCE_KEYS:
        if not str(source.get(key) or "").strip():
            raise PaperNumbersError(f"tables.{name}.source: missing {key!r}")
    return dict(source)


def _row_numbers(name: str, table: Mapping[str, Any], index: int, row: Mapping[str, Any],
                 source: Mapping[str, Any]) -> list[PaperNumber]:
    where = f"tables.{name}.rows[{index}]"
    for key in ("algorithm", "label"):
        if not row.get(key):
            raise PaperNumbersError(f"{where}: missing {key!r}")
    match = {**_match(table.get("match"), f"tables.{name}"), **_match(row.get("match"), where)}
    common = dict(table=name, selection=table["selection"], algorithm=str(row["algorithm"]),
                  label=str(row["label"]), source=source, match=tuple(sorted(match.items())))
    out = []
    for dataset, value in (row.get("values") or {}).items():
        mean, err = _mean_err(value, f"{where}.values.{dataset}")
        over = tuple(table.get("average_over") or ()) if dataset == AVERAGE else ()
        if dataset == AVERAGE and not over:
            raise PaperNumbersError(f"tables.{name}: 'average' value needs 'average_over'")
        out.append(PaperNumber(dataset=str(dataset), domain=AVG, mean=mean, err=err,
                               average_over=over, **common))
    for dataset, domains in (row.get("domains") or {}).items():
        for domain, value in domains.items():
            mean, err = _mean_err(value, f"{where}.domains.{dataset}.{domain}")
            out.append(PaperNumber(dataset=str(dataset), domain=str(domain), mean=mean, err=err,
                                   **common))
    return out


def parse_paper_numbers(data: Mapping[str, Any]) -> tuple[list[PaperNumber], dict[str, str]]:
    """Entries of a parsed paper-numbers mapping, and its ``dataset_names`` renaming."""
    tables = data.get("tables")
    if not isinstance(tables, Mapping) or not tables:
        raise PaperNumbersError("paper numbers: no 'tables' mapping")
    valid = {m.slug for m in SELECTION_METHODS}
    numbers: list[PaperNumber] = []
    for name, table in tables.items():
        source = _source(table, name)
        if table.get("selection") not in valid:
            raise PaperNumbersError(f"tables.{name}.selection: {table.get('selection')!r} is "
                                    f"not one of {', '.join(sorted(valid))}")
        for index, row in enumerate(table.get("rows") or []):
            numbers += _row_numbers(name, table, index, row, source)
    names = {str(k): str(v) for k, v in (data.get("dataset_names") or {}).items()}
    return numbers, names


def load_paper_numbers(path: str | os.PathLike[str]) -> tuple[list[PaperNumber], dict[str, str]]:
    """Read ``params/dg/paper_numbers.yaml`` (see its header for the layout)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"paper numbers file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PaperNumbersError(f"{path}: invalid YAML ({exc})") from None
    try:
        return parse_paper_numbers(data or {})
    except PaperNumbersError as exc:
        raise PaperNumbersError(f"{path}: {exc}") from None


def record_matches(record: Record, match: Sequence[tuple[str, tuple[Any, ...]]]) -> bool:
    """True when every ``(hparam, allowed values)`` holds (None allows an absent key)."""
    hparams = record.get("hparams") or {}
    return all(hparams.get(key) in allowed for key, allowed in match)


def is_reduced(record: Record) -> bool:
    """A record of a reduced run: ``reduced: true`` (top level or ``args``) or a sweep name
    containing ``reduced``."""
    args = record.get("args") or {}
    if record.get("reduced") or args.get("reduced"):
        return True
    return "reduced" in str(record.get("sweep") or args.get("sweep") or "").lower()


def rename_datasets(records: Sequence[Record], names: Mapping[str, str]) -> list[Record]:
    """Records with DomainBed dataset names mapped to ours (``PACS`` -> ``pacs``)."""
    return [{**r, "dataset": names.get(r["dataset"], r["dataset"])} for r in records]


class _Ours:
    """Our tables per hyperparameter filter (built once per distinct filter)."""

    def __init__(self, records: Sequence[Record], reduced_label: str | None) -> None:
        self.records = list(records)
        self.reduced_label = reduced_label
        self._reports: dict[tuple, tuple[Report | None, list[Record]]] = {}

    def report(self, match: tuple) -> tuple[Report | None, list[Record]]:
        """Our report (None without matching records) and the records behind it."""
        if match not in self._reports:
            chosen = [r for r in self.records if record_matches(r, match)]
            self._reports[match] = (build_report(chosen) if chosen else None, chosen)
        return self._reports[match]

    def cell(self, match: tuple, dataset: str, domain: str, selection: str,
             algorithm: str) -> Cell | None:
        """Our cell (percent via Cell.mean/err), or None when we have no such result."""
        report, _ = self.report(match)
        if report is None or algorithm not in report.algorithms or dataset not in report.environments:
            return None
        result = next(m for m in report.methods if m.method.slug == selection)
        if domain == AVG:
            row = next(r for r in result.averages.rows if r.algorithm == algorithm)
            cell = row.cells[result.averages.columns.index(dataset)]
        else:
            labels = report.environments[dataset]
            if domain not in labels:
                logger.warning("paper domain %r is not an environment of %s %s; skipped",
                               domain, dataset, list(labels))
                return None
            table = next(t for t in result.datasets if t.key == dataset)
            row = next(r for r in table.rows if r.algorithm == algorithm)
            cell = row.cells[labels.index(domain)]
        return cell if cell.values else None

    def marks(self, match: tuple, datasets: Sequence[str], algorithm: str) -> tuple[str, int | None]:
        """(reduced label or "", max ``args.steps``) of the records behind a number."""
        _, chosen = self.report(match)
        used = [r for r in chosen if r["dataset"] in datasets and r["algorithm"] == algorithm]
        steps = [int((r.get("args") or {}).get("steps") or 0) for r in used]
        if not used:
            return "", None
        label = self.reduced_label or ("reduced" if any(is_reduced(r) for r in used) else "")
        return label, (max(steps) or None)


def _ours_for(ours: _Ours, n: PaperNumber) -> Comparison:
    if n.dataset == AVERAGE:
        cells = [ours.cell(n.match, d, AVG, n.selection, n.algorithm) for d in n.average_over]
        complete = all(c is not None for c in cells)
        mean = sum(c.mean for c in cells) / len(cells) if complete else None  # type: ignore[union-attr]
        reduced, steps = ours.marks(n.match, n.average_over, n.algorithm) if complete else ("", None)
        return Comparison(n.dataset, n.domain, n.selection, n.algorithm, None, mean, n, reduced,
                          steps)
    cell = ours.cell(n.match, n.dataset, n.domain, n.selection, n.algorithm)
    reduced, steps = ours.marks(n.match, [n.dataset], n.algorithm) if cell else ("", None)
    return Comparison(n.dataset, n.domain, n.selection, n.algorithm, cell,
                      None if cell is None else cell.mean, n, reduced, steps)


def _not_published(ours: _Ours, numbers: Sequence[PaperNumber],
                   selections: Sequence[str]) -> list[Comparison]:
    """n/a rows (per-dataset average) for our datasets without any published number."""
    report, _ = ours.report(())
    if report is None:
        return []
    published = {n.dataset for n in numbers} | {d for n in numbers for d in n.average_over}
    rows = []
    for dataset in report.environments:
        if dataset in published:
            continue
        for selection in selections:
            for algorithm in report.algorithms:
                cell = ours.cell((), dataset, AVG, selection, algorithm)
                reduced, steps = ours.marks((), [dataset], algorithm) if cell else ("", None)
                rows.append(Comparison(dataset, AVG, selection, algorithm, cell,
                                       None if cell is None else cell.mean, None, reduced, steps))
    return rows


def compare(records: Sequence[Record], numbers: Sequence[PaperNumber], *,
            dataset_names: Mapping[str, str] | None = None, reduced_label: str | None = None,
            selections: Sequence[str] = ("iid", "lodo", "oracle"),
            only_ours: bool = False) -> list[Comparison]:
    """Every paper number next to ours (blank when we have no such run), then n/a rows for
    our datasets without published numbers; ``only_ours`` drops rows without our number."""
    ours = _Ours(rename_datasets(records, dataset_names or {}), reduced_label)
    rows = [_ours_for(ours, n) for n in numbers if n.selection in selections]
    rows += _not_published(ours, numbers, selections)
    if only_ours:
        rows = [r for r in rows if r.ours_mean is not None]
    return sort_rows(rows)


def sort_rows(rows: Sequence[Comparison]) -> list[Comparison]:
    """Order: datasets as first seen (``average`` last), per-domain rows before ``avg``,
    selection (iid, lodo, oracle), then the given order (stable)."""
    first: dict[str, int] = {}
    for r in rows:
        first.setdefault(r.dataset, len(first))
    sel = {m.slug: i for i, m in enumerate(SELECTION_METHODS)}

    def key(r: Comparison) -> tuple:
        return (r.dataset == AVERAGE, first[r.dataset], r.domain == AVG, sel.get(r.selection, 9))
    return sorted(rows, key=key)

