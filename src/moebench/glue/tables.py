"""GLUE tables: one column per task + Avg (mean +- population std over seeds, as the MASS
authors' ``np.std``), K and k for the MoE methods; per-task experts; ours vs paper; headline.

Files (``results/glue/tables/``): ``glue.{txt,md,csv,tex}``, ``glue_experts.{txt,md,csv,tex}``,
``glue_vs_paper.{csv,md}`` and ``headline.json`` (a flat dict of a few numbers).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from moebench.glue.study import METRIC_NAMES, TASKS
from moebench.io import atomic_write_json, atomic_write_text

Row = list[str]


def _stats(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std())          # population std (ddof = 0)


def _pm(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "-"
    mean, std = _stats([v * scale for v in values])
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _order(summaries: Sequence[Mapping], key: str, preferred: Sequence[str] = ()) -> list[str]:
    seen = list(dict.fromkeys(s[key] for s in summaries))
    return [m for m in preferred if m in seen] + [m for m in seen if m not in preferred]


def _pick(summaries: Sequence[Mapping], **match: Any) -> list[Mapping]:
    return [s for s in summaries if all(s[k] == v for k, v in match.items())]


def seed_averages(summaries: Sequence[Mapping], method: str, tasks: Sequence[str]) -> list[float]:
    """Per seed present in every task: the mean score over the tasks."""
    by_seed: dict[int, dict[str, float]] = {}
    for s in _pick(summaries, method=method):
        by_seed.setdefault(s["seed"], {})[s["task"]] = s["score"]
    return [float(np.mean([v[t] for t in tasks])) for v in by_seed.values()
            if all(t in v for t in tasks)]


def main_rows(summaries: Sequence[Mapping], methods: Sequence[str], tasks: Sequence[str]
              ) -> tuple[Row, list[Row]]:
    header = ["Method", *[TASKS[t].title or t for t in tasks], "Avg", "K", "k"]
    rows = []
    for m in methods:
        cells = [_pm([s["score"] for s in _pick(summaries, method=m, task=t)]) for t in tasks]
        ks = [s for s in _pick(summaries, method=m) if s["K"] is not None]
        K = f"{np.mean([s['K'] for s in ks]):.1f}" if ks else "-"
        k = f"{np.mean([s['k'] for s in ks if s['k'] is not None]):.2f}" if ks else "-"
        rows.append([m, *cells, _pm(seed_averages(summaries, m, tasks)), K, k])
    return header, rows


def expert_rows(summaries: Sequence[Mapping], methods: Sequence[str], tasks: Sequence[str]
                ) -> tuple[Row, list[Row]]:
    header = ["Method", "Task", "K start", "K final", "k", "expansions", "removals", "seeds"]
    rows = []
    for m in methods:
        for t in tasks:
            runs = [s for s in _pick(summaries, method=m, task=t) if s["K"] is not None]
            if not runs:
                continue
            events = [e for s in runs for layer in s["layers"].values() for e in layer["events"]]
            start = [s["K"] - _net(s) for s in runs]
            rows.append([m, TASKS[t].title or t, _pm(start, 1.0), _pm([s["K"] for s in runs], 1.0),
                         _pm([s["k"] for s in runs], 1.0, 2),
                         str(sum(e["kind"] == "expand" for e in events)),
                         str(sum(e["kind"] == "remove" for e in events)), str(len(runs))])
    return header, rows


def _net(summary: Mapping) -> float:
    """Expansions minus removals per layer, averaged over layers."""
    nets = [sum(1 if e["kind"] == "expand" else -1 for e in layer["events"])
            for layer in summary["layers"].values()]
    return float(np.mean(nets)) if nets else 0.0


def caption(summaries: Sequence[Mapping], tasks: Sequence[str]) -> str:
    seeds = sorted({s["seed"] for s in summaries})
    metrics = "; ".join(f"{TASKS[t].title or t}: {METRIC_NAMES[TASKS[t].metric]}" for t in tasks)
    labels = "; ".join(f"{TASKS[t].title or t}: {TASKS[t].labels}" for t in tasks)
    diverged = sum(s["diverged"] for s in summaries)
    return (f"GLUE study: best-epoch validation score x 100 ({metrics}), mean ± population "
            f"std (numpy std, ddof 0, as the MASS authors) over seeds {seeds}; Avg: mean over "
            f"tasks per seed, then mean ± std. K: final number of experts per MoE layer, k: "
            f"mean active experts per token over training (MoE methods). Labels: {labels}."
            + (f" Diverged runs: {diverged}." if diverged else ""))


def render_text(header: Row, rows: list[Row], title: str = "") -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    body = [line(header), "  ".join("-" * w for w in widths), *map(line, rows)]
    return (f"{title}\n" if title else "") + "\n".join(body) + "\n"


def render_md(header: Row, rows: list[Row], title: str = "") -> str:
    out = [f"| {' | '.join(header)} |", f"|{'|'.join('---' for _ in header)}|"]
    out += [f"| {' | '.join(r)} |" for r in rows]
    return (f"{title}\n\n" if title else "") + "\n".join(out) + "\n"


def render_csv(header: Row, rows: list[Row]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue()


def render_tex(header: Row, rows: list[Row], title: str = "") -> str:
    esc = lambda s: s.replace("±", r"$\pm$").replace("_", r"\_").replace("%", r"\%")  # noqa
    lines = [r"\begin{table}[t]", r"\centering", f"\\caption{{{esc(title)}}}",
             r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}", r"\toprule",
             " & ".join(map(esc, header)) + r" \\", r"\midrule"]
    lines += [" & ".join(map(esc, r)) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(out: Path, name: str, header: Row, rows: list[Row], title: str,
                formats: Sequence[str] = ("txt", "md", "csv", "tex")) -> None:
    render = {"txt": lambda: render_text(header, rows, title),
              "md": lambda: render_md(header, rows, title), "csv": lambda: render_csv(header, rows),
              "tex": lambda: render_tex(header, rows, title)}
    for fmt in formats:
        atomic_write_text(out / f"{name}.{fmt}", render[fmt]())


PAPER_TASKS = ("cola", "qnli", "rte", "mnli", "mrpc")


def paper_rows(summaries: Sequence[Mapping], methods: Sequence[str],
               paper: Mapping[str, Any]) -> tuple[Row, list[Row]]:
    """Ours vs the MASS paper on its five GLUE tasks; paper cells not in params stay empty."""
    header = ["Method", "Task", "Ours", "Paper", "Status"]
    cells = paper.get("cells") or {}
    rows = []
    for m in methods:
        for t in PAPER_TASKS:
            ours = [s["score"] for s in _pick(summaries, method=m, task=t)]
            value: Optional[float] = (cells.get(m) or {}).get(t)
            status = "paper value from params" if value is not None else \
                "paper value not retrieved"
            if not ours:
                status += "; not run in this grid"
            rows.append([m, TASKS[t].title, _pm(ours) if ours else "",
                         "" if value is None else f"{value:.1f}", status])
    return header, rows


def headline(summaries: Sequence[Mapping], methods: Sequence[str], tasks: Sequence[str]
             ) -> dict[str, float]:
    """The compact ``dvc metrics`` numbers (keys ``glue/<method>/<column>``, columns shared
    with the other studies' rows): each method's Avg over tasks and, for the MoE methods, the
    final K and mean k averaged over tasks, seeds and MoE layers (per task: the tables)."""
    out: dict[str, float] = {}
    for m in methods:
        avg = seed_averages(summaries, m, tasks)
        if avg:
            out[f"glue/{m}/avg"] = round(100 * float(np.mean(avg)), 2)
        runs = [s for s in _pick(summaries, method=m) if s["K"] is not None]
        if runs:
            out[f"glue/{m}/K"] = round(float(np.mean([s["K"] for s in runs])), 2)
            out[f"glue/{m}/k"] = round(float(np.mean([s["k"] for s in runs])), 2)
    return out


def write_tables(summaries: Sequence[Mapping], out: str | Path, report: Mapping[str, Any]
                 ) -> Path:
    """Every table and the headline of the study into ``out``."""
    out = Path(out)
    methods = _order(summaries, "method", report.get("method_order") or ())
    tasks = _order(summaries, "task")
    title = caption(summaries, tasks)
    write_table(out, "glue", *main_rows(summaries, methods, tasks), title)
    write_table(out, "glue_experts", *expert_rows(summaries, methods, tasks),
                "GLUE study: number of experts K per MoE layer at the start and end of "
                "training and mean active experts per token k (mean ± population std over "
                "seeds); expansion and removal events summed over seeds and layers.")
    paper = report.get("paper") or {}
    note = (f"Ours vs paper ({paper.get('source', 'MASS paper')}): "
            f"{paper.get('note', '')}. Ours: mean ± population std over seeds.")
    write_table(out, "glue_vs_paper", *paper_rows(summaries, methods, paper), note,
                formats=("csv", "md"))
    atomic_write_json(out / "headline.json", headline(summaries, methods, tasks))
    return out
