"""Formatting of :mod:`moebench.dg.reporting.tables` results: text, LaTeX, CSV, markdown, JSON.

``render_text`` and ``render_latex`` reproduce the layout of DomainBed's ``collect_results``
(``results.txt`` / ``results.tex``): cells ``mean +/- err`` (``mean $\\pm$ err`` in LaTeX) with
one decimal, ``X`` for a missing cell, text cells padded and cut to the column width and
separated by two spaces. Deliberate LaTeX changes: special characters in labels are escaped
(DomainBed escapes only ``%``) and cells are never cut, so the document always compiles.
"""
from __future__ import annotations

import csv
import io
import re
from typing import Any, Sequence

from moebench.dg.reporting.tables import Cell, Report, ResultTable
from moebench.dg.selection import Selection

DATASET_COLWIDTH = 20
AVERAGES_COLWIDTH = 25
_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


def slug(name: str) -> str:
    """File-name form of a dataset name: lowercase, runs of other characters become ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "dataset"


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def format_cell(cell: Cell, style: str = "text") -> str:
    """``85.5 +/- 0.2`` (text), ``85.5 $\\pm$ 0.2`` (latex) or ``85.5 ± 0.2`` (md); ``X`` if empty."""
    if cell.mean is None:
        return "X"
    sep = {"text": "+/-", "latex": "$\\pm$", "md": "±"}[style]
    return f"{cell.mean:.1f} {sep} {cell.err:.1f}"


def format_avg(value: float | None) -> str:
    """Row average with one decimal, ``X`` when missing."""
    return "X" if value is None else f"{value:.1f}"


def _table_cells(table: ResultTable, style: str) -> list[list[str]]:
    """Header row then one row per algorithm, as strings."""
    rows = [["Algorithm", *table.columns, "Avg"]]
    for row in table.rows:
        rows.append([row.algorithm, *(format_cell(c, style) for c in row.cells), format_avg(row.avg)])
    return rows


def _colwidth(table: ResultTable) -> int:
    return AVERAGES_COLWIDTH if table.key == "averages" else DATASET_COLWIDTH


def text_table(table: ResultTable) -> list[str]:
    """Lines of one DomainBed text table (a blank line, the header line, the rows)."""
    width = _colwidth(table)
    lines = ["", f"-------- {table.title}"]
    for row in _table_cells(table, "text"):
        lines.append("  ".join(cell.ljust(width)[:width] for cell in row) + " ")
    return lines


def latex_table(table: ResultTable) -> list[str]:
    """Lines of one DomainBed LaTeX table (booktabs tabular inside an adjustbox)."""
    width = _colwidth(table)
    cells = _table_cells(table, "latex")
    cells[0] = [f"\\textbf{{{latex_escape(c)}}}" for c in cells[0]]
    for row in cells[1:]:
        row[0] = latex_escape(row[0])
    lines = ["", "\\begin{center}", "\\adjustbox{max width=\\textwidth}{%",
             "\\begin{tabular}{l" + "c" * (len(table.columns) + 1) + "}", "\\toprule"]
    for i, row in enumerate(cells):
        lines.append(" & ".join(cell.ljust(width) for cell in row) + " \\\\")
        if i == 0:
            lines.append("\\midrule")
    return lines + ["\\bottomrule", "\\end{tabular}}", "\\end{center}"]


def diverged_note(report: Report) -> str:
    """One line naming how many runs diverged per algorithm ("" when none did)."""
    if not report.diverged:
        return ""
    counts = ", ".join(f"{a} {n}" for a, n in sorted(report.diverged.items()))
    return (f"Diverged runs (loss became non-finite; stopped there, their last record enters "
            f"model selection): {counts}")


def render_text(report: Report) -> str:
    """The whole ``results.txt``: ``Total records: N`` then every method's tables, and a
    footnote when runs diverged."""
    lines = [f"Total records: {report.total_records}"]
    for result in report.methods:
        for table in (*result.datasets, result.averages):
            lines.extend(text_table(table))
    note = diverged_note(report)
    return "\n".join(lines + (["", note] if note else [])) + "\n"


def render_latex(report: Report) -> str:
    """The whole ``results.tex``: a standalone article with one subsection per method."""
    lines = ["\\documentclass{article}", "\\usepackage{booktabs}", "\\usepackage{adjustbox}",
             "\\begin{document}", "\\section{Full DomainBed results}",
             f"% Total records: {report.total_records}"]
    for result in report.methods:
        lines += ["", f"\\subsection{{Model selection: {result.method.name}}}"]
        for table in result.datasets:
            lines += ["", f"\\subsubsection{{{latex_escape(table.key)}}}", *latex_table(table)]
        lines += ["", "\\subsubsection{Averages}", *latex_table(result.averages)]
    note = diverged_note(report)
    lines += ["", latex_escape(note)] if note else []
    return "\n".join(lines + ["\\end{document}"]) + "\n"


def table_markdown(table: ResultTable) -> str:
    """A GitHub markdown table with the table's title as a heading."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    rows = _table_cells(table, "md")
    out = [f"### {table.title}", "", line(rows[0]),
           "|:---|" + "---:|" * (len(rows[0]) - 1)]
    out += [line(row) for row in rows[1:]]
    return "\n".join(out) + "\n"


def _csv_text(rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _num(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def table_csv(table: ResultTable) -> str:
    """CSV: ``Algorithm``, then ``<col>`` (mean %) and ``<col>_err`` per column, then ``Avg``;
    one decimal as in the tables, empty for a missing cell."""
    header = ["Algorithm"]
    for col in table.columns:
        header += [col, f"{col}_err"]
    rows: list[list[str]] = [header + ["Avg"]]
    for row in table.rows:
        values = [row.algorithm]
        for cell in row.cells:
            values += [_num(cell.mean), _num(cell.err)]
        rows.append(values + [_num(row.avg)])
    return _csv_text(rows)


def selection_csv(selections: Sequence[Selection]) -> str:
    """One row per selected model: identity, chosen hparams_seed and step, val/test acc."""
    rows: list[list[Any]] = [["trial_seed", "dataset", "algorithm", "test_env", "hparams_seed",
                              "step", "val_acc", "test_acc"]]
    for s in selections:
        rows.append([s.trial_seed, s.dataset, s.algorithm, s.test_env, s.hparams_seed, s.step,
                     f"{s.val_acc:.6f}", f"{s.test_acc:.6f}"])
    return _csv_text(rows)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _cell_json(cell: Cell) -> dict[str, Any]:
    return {"mean": _round(cell.mean), "err": _round(cell.err), "n": len(cell.values)}


def _table_json(table: ResultTable) -> dict[str, Any]:
    """``{algorithm: {"cells": {column: {mean, err, n}}, "avg": x}}`` (percent, 4 decimals)."""
    return {row.algorithm: {"cells": {col: _cell_json(c) for col, c in zip(table.columns, row.cells)},
                            "avg": _round(row.avg)}
            for row in table.rows}


def summary(report: Report) -> dict[str, Any]:
    """Machine-readable results: per method slug, per dataset, per algorithm the per-env
    ``mean``/``err``/``n`` and ``avg``, plus the Averages table (accuracies in percent) and
    the diverged runs per algorithm."""
    methods = {}
    for result in report.methods:
        methods[result.method.slug] = {
            "name": result.method.name,
            "datasets": {t.key: _table_json(t) for t in result.datasets},
            "averages": _table_json(result.averages),
        }
    return {"total_records": report.total_records,
            "environments": {d: list(e) for d, e in report.environments.items()},
            "methods": methods, "diverged_runs": dict(report.diverged)}
