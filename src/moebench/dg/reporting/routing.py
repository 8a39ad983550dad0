"""Routing statistics of MoE layers at the checkpoints chosen by model selection.

Our records carry ``routing = {layer: {"load": [fraction per expert], "dropped": float,
"tokens": int, "active_experts": int (optional; MASS)}}`` (``{}`` for dense models) and
``moe_backend`` (which kernel ran the expert GEMMs, shown as the ``Kernel`` column). For each
selection method, algorithm, dataset and MoE layer this module averages, over the selected
checkpoints (every trial seed x test env), the number of experts (``len(load)``), the number
of active experts (when any record has it), the dropped fraction and the largest expert load.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from moebench.dg.reporting.tables import Report
from moebench.dg.selection import Selection


@dataclass(frozen=True)
class RoutingRow:
    """Mean routing statistics of one MoE layer (percentages for dropped and max load)."""

    selection: str
    algorithm: str
    dataset: str
    layer: str
    experts: float | None
    active_experts: float | None
    dropped: float | None
    max_load: float | None
    n: int
    kernel: str = ""


def _natural_key(name: str) -> list[Any]:
    """Sort key putting ``blocks.8`` before ``blocks.10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _layer_row(slug: str, algorithm: str, dataset: str, layer: str,
               stats: Sequence[Mapping[str, Any]], kernel: str = "") -> RoutingRow:
    """Average one layer's statistics over the selected checkpoints."""
    loads = [s["load"] for s in stats if s.get("load")]
    active = [float(s["active_experts"]) for s in stats if s.get("active_experts") is not None]
    dropped = [100.0 * float(s["dropped"]) for s in stats if s.get("dropped") is not None]
    return RoutingRow(
        selection=slug, algorithm=algorithm, dataset=dataset, layer=layer,
        experts=_mean([float(len(load)) for load in loads]),
        active_experts=_mean(active),
        dropped=_mean(dropped),
        max_load=_mean([100.0 * float(max(load)) for load in loads]),
        n=len(stats), kernel=kernel,
    )


def _group_rows(slug: str, algorithm: str, dataset: str,
                selections: Sequence[Selection]) -> list[RoutingRow]:
    """Rows of every MoE layer seen in the chosen records of one algorithm and dataset."""
    per_layer: dict[str, list[Mapping[str, Any]]] = {}
    for s in selections:
        for layer, stats in (s.record.get("routing") or {}).items():
            per_layer.setdefault(layer, []).append(stats)
    kernels = sorted({str(s.record["moe_backend"]) for s in selections
                      if s.record.get("moe_backend")})
    return [_layer_row(slug, algorithm, dataset, layer, per_layer[layer], ", ".join(kernels))
            for layer in sorted(per_layer, key=_natural_key)]


def routing_rows(report: Report) -> list[RoutingRow]:
    """Routing rows for every method, algorithm, dataset (report order) and MoE layer."""
    rows: list[RoutingRow] = []
    for result in report.methods:
        for algorithm in report.algorithms:
            for dataset in report.environments:
                chosen = [s for s in result.selections
                          if (s.algorithm, s.dataset) == (algorithm, dataset)]
                rows += _group_rows(result.method.slug, algorithm, dataset, chosen)
    return rows


def _fmt(value: float | None) -> str:
    """Whole numbers without decimals (expert counts), else one decimal; empty when missing."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _table(rows: Sequence[RoutingRow]) -> list[list[str]]:
    """Header and rows as strings; ``Kernel`` (the expert GEMM backend the records name) and
    ``Active experts`` only when some row has them."""
    with_active = any(r.active_experts is not None for r in rows)
    with_kernel = any(r.kernel for r in rows)
    header = ["Selection", "Algorithm", "Dataset", "Layer"] + (["Kernel"] if with_kernel else [])
    header += ["Experts"] + (["Active experts"] if with_active else [])
    header += ["Dropped %", "Max load %", "N"]
    out = [header]
    for r in rows:
        line = [r.selection, r.algorithm, r.dataset, r.layer] + ([r.kernel] if with_kernel else [])
        line += [_fmt(r.experts)] + ([_fmt(r.active_experts)] if with_active else [])
        dropped = "" if r.dropped is None else f"{r.dropped:.1f}"
        max_load = "" if r.max_load is None else f"{r.max_load:.1f}"
        out.append(line + [dropped, max_load, str(r.n)])
    return out


def routing_csv(rows: Sequence[RoutingRow]) -> str:
    """CSV of the routing table (header only when no record has routing statistics)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(_table(rows))
    return buffer.getvalue()


def routing_markdown(rows: Sequence[RoutingRow]) -> str:
    """Markdown routing table; a note instead of rows when no MoE layer was recorded."""
    table = _table(rows)
    lines = ["### Routing statistics at the selected checkpoints", ""]
    if not rows:
        return "\n".join(lines + ["No MoE routing statistics in the records."]) + "\n"
    lines.append("| " + " | ".join(table[0]) + " |")
    left = 5 if "Kernel" in table[0] else 4
    lines.append("|" + ":---|" * left + "---:|" * (len(table[0]) - left))
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in table[1:]]
    return "\n".join(lines) + "\n"
