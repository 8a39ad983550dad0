"""Write every DomainBed table file of a :class:`~moebench.dg.reporting.tables.Report`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from moebench.dg.reporting import render
from moebench.dg.reporting.routing import routing_csv, routing_markdown, routing_rows
from moebench.dg.reporting.tables import Report
from moebench.io import atomic_write_json, atomic_write_text


def headline(report: Report) -> dict[str, Any]:
    """The compact DVC metrics: ``dg/<dataset>/<algorithm>/<selection>`` -> the dataset's Avg
    (percent), plus ``.../diverged`` where runs diverged (see :mod:`moebench.assemble`)."""
    out: dict[str, Any] = {}
    for result in report.methods:
        table = result.averages
        for row in table.rows:
            for dataset, cell in zip(table.columns, row.cells):
                if cell.mean is not None:
                    out[f"dg/{dataset}/{row.algorithm}/{result.method.slug}"] = round(cell.mean, 1)
    for algorithm, n in sorted(report.diverged.items()):
        for dataset in report.environments:
            out[f"dg/{dataset}/{algorithm}/diverged"] = n
    return out


def write_report(report: Report, out_dir: str | os.PathLike[str], *,
                 routing: bool = True) -> list[Path]:
    """Write every table file under ``out_dir`` (each atomically); returns the paths written."""
    out = Path(out_dir)
    written = [atomic_write_text(out / "results.txt", render.render_text(report)),
               atomic_write_text(out / "results.tex", render.render_latex(report))]
    for result in report.methods:
        for table in (*result.datasets, result.averages):
            stem = f"{table.method_slug}_{render.slug(table.key)}"
            written.append(atomic_write_text(out / f"{stem}.csv", render.table_csv(table)))
            written.append(atomic_write_text(out / f"{stem}.md", render.table_markdown(table)))
        written.append(atomic_write_text(out / f"{result.method.slug}_selection.csv",
                                         render.selection_csv(result.selections)))
    if routing:
        rows = routing_rows(report)
        written.append(atomic_write_text(out / "routing.csv", routing_csv(rows)))
        written.append(atomic_write_text(out / "routing.md", routing_markdown(rows)))
    written.append(atomic_write_json(out / "summary.json", render.summary(report)))
    written.append(atomic_write_json(out / "headline.json", headline(report)))
    return written
