"""Figures from run records: every figure is written as PNG + PDF + the CSV it is drawn from.

Drawn with matplotlib's object API (``matplotlib.figure.Figure``, Agg for PNG): no pyplot, no
global backend switch, no network. Files (``<stem>.png/.pdf/.csv``, each written atomically):

* ``accuracy_<selection>_<dataset>`` — per-test-domain accuracy bars, algorithms side by side,
  error bars = the tables' standard error (:func:`accuracy_bars`);
* ``bubble_<selection>`` — accuracy vs training step time, bubble area = peak memory, one
  bubble per algorithm, one panel per dataset (:func:`bubble_chart`; SF-MoE README style);
* ``curves_<dataset>`` — validation/test accuracy vs step, mean ± s.e. over trials
  (:func:`accuracy_curves`);
* ``expert_load_<selection>_<dataset>`` — expert load distribution per MoE layer and the
  dropped fraction, per algorithm (:func:`expert_load`).

Attention maps (they need a trained model) live in :mod:`moebench.dg.reporting.attention`.
"""
from __future__ import annotations

import io
import logging
import math
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from moebench.errors import DataError
from moebench.io import atomic_write, atomic_write_text
from moebench.dg.reporting import figdata
from moebench.dg.reporting.records import Record
from moebench.dg.reporting.render import slug
from moebench.dg.reporting.tables import DEFAULT_ALGORITHM_ORDER, Cell, Report, build_report

logger = logging.getLogger(__name__)

FIGURE_KINDS: tuple[str, ...] = ("accuracy", "bubble", "curves", "expert_load")
FORMATS: tuple[str, ...] = ("png", "pdf")
DPI = 150


def save_figure(fig: Figure, frame: pd.DataFrame, stem: str | os.PathLike[str]) -> list[Path]:
    """Write ``<stem>.png``, ``<stem>.pdf`` and ``<stem>.csv`` atomically; returns the paths."""
    stem = Path(stem)
    written = []
    for fmt in FORMATS:
        buffer = io.BytesIO()
        metadata = {"CreationDate": None} if fmt == "pdf" else None  # reproducible bytes
        fig.savefig(buffer, format=fmt, dpi=DPI, metadata=metadata)
        data = buffer.getvalue()
        written.append(atomic_write(stem.with_suffix(f".{fmt}"), lambda fh, d=data: fh.write(d)))
    written.append(atomic_write_text(stem.with_suffix(".csv"), frame.to_csv(index=False)))
    return written


def algorithm_colors(algorithms: Sequence[str]) -> dict[str, tuple]:
    """A fixed tab10 colour per algorithm, by its position in ``algorithms``."""
    cmap = colormaps["tab10"]
    return {a: cmap(i % 10) for i, a in enumerate(algorithms)}


def _natural_key(name: str) -> list:
    """Sort key putting ``blocks.8`` before ``blocks.10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _grid(n: int, ncols: int = 3) -> tuple[int, int]:
    cols = max(1, min(ncols, n))
    return math.ceil(n / cols), cols


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _bar_labels(ax, x: np.ndarray, heights: np.ndarray) -> None:
    """The value inside each bar's foot; ``X`` (DomainBed's empty cell) where none."""
    for xi, h in zip(x, heights):
        finite = bool(np.isfinite(h))
        ax.text(xi, 1.0, f"{h:.1f}" if finite else "X", ha="center", va="bottom", fontsize=6,
                rotation=90 if finite else 0, color="white" if finite else "gray")


def accuracy_bars(report: Report, dataset: str, stem: str | os.PathLike[str],
                  selection: str = "iid") -> list[Path]:
    """Bars of test accuracy per test domain (and Avg) of one dataset; returns files."""
    frame = figdata.accuracy_frame(report, dataset, selection)
    method = figdata.method_results(report, selection).method
    domains = [*report.environments[dataset], figdata.AVG]
    algorithms = list(dict.fromkeys(frame.algorithm))
    colors = algorithm_colors(report.algorithms)
    width = 0.55 * len(domains) * max(1, len(algorithms)) + 2.0
    fig = Figure(figsize=(min(16.0, max(6.0, width)), 4.2), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(algorithms))
    x = np.arange(len(domains))
    for i, algorithm in enumerate(algorithms):
        sub = frame[frame.algorithm == algorithm].set_index("domain").reindex(domains)
        xs = x - 0.4 + width * (i + 0.5)
        ax.bar(xs, sub["mean"], width, yerr=sub["err"], capsize=3, label=algorithm,
               color=colors[algorithm], edgecolor="black", linewidth=0.5)
        _bar_labels(ax, xs, sub["mean"].to_numpy(dtype=float))
    top = np.nanmax((frame["mean"] + frame["err"].fillna(0)).to_numpy(dtype=float), initial=0.0)
    ax.set_ylim(0, min(100.0, top + 8.0) if top > 0 else 100.0)
    ax.set_xticks(x, domains)
    ax.set_xlim(-0.6, len(domains) - 0.4)
    if frame["mean"].isna().all():
        ax.text(0.5, 0.5, f"no results for {method.name}\n(leave-one-domain-out needs pair runs)"
                if selection == "lodo" else f"no results for {method.name}", ha="center",
                va="center", transform=ax.transAxes, color="gray")
    ax.set_xlabel("Test domain")
    ax.set_ylabel("Test accuracy (%)")
    ax.set_title(f"{dataset}: out-of-domain accuracy (mean ± s.e. over trials)\n"
                 f"model selection: {method.name}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="Algorithm", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save_figure(fig, frame, stem)


def _bubble_panel(ax, sub: pd.DataFrame, colors: dict, size_per_gb: float) -> None:
    for row in sub.itertuples():
        mem = 0.0 if not np.isfinite(row.mem_gb) else row.mem_gb
        area = max(30.0, size_per_gb * mem)  # points^2
        ax.errorbar(row.step_time, row.accuracy, yerr=row.accuracy_err, color="black",
                    capsize=2, linewidth=0.8, zorder=2)
        ax.scatter(row.step_time, row.accuracy, s=area, alpha=0.55, color=colors[row.algorithm],
                   edgecolor="black", linewidth=0.6, label=row.algorithm, zorder=3)
        ax.annotate(f"{row.algorithm}\n{mem:.2f} GB", (row.step_time, row.accuracy),
                    textcoords="offset points", xytext=(math.sqrt(area / math.pi) + 4, 0),
                    ha="left", va="center", fontsize=7, zorder=5)
    ax.margins(x=0.35, y=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.grid(alpha=0.3)


def bubble_chart(records: Sequence[Record], report: Report, stem: str | os.PathLike[str],
                 selection: str = "iid") -> list[Path]:
    """Accuracy vs training step time, bubble area ∝ peak memory; one panel per dataset.

    Step time is the records' ``step_time`` (the update's compute per step); the wait for
    the minibatches (``data_time``) is excluded and goes into the CSV next to it."""
    frame = figdata.bubble_frame(records, report, selection)
    method = figdata.method_results(report, selection).method
    datasets = list(dict.fromkeys(frame.dataset)) or ["(none)"]
    rows, cols = _grid(len(datasets))
    fig = Figure(figsize=(4.6 * cols, 3.9 * rows + 0.6), layout="constrained")
    colors = algorithm_colors(report.algorithms)
    max_mem = float(np.nanmax(frame.mem_gb.to_numpy(dtype=float), initial=0.0)) if len(frame) else 0.0
    size_per_gb = 1500.0 / max_mem if max_mem > 0 else 0.0
    for i, dataset in enumerate(datasets):
        ax = fig.add_subplot(rows, cols, i + 1)
        sub = frame[(frame.dataset == dataset) & frame.step_time.notna() & frame.accuracy.notna()]
        if sub.empty:
            _empty(ax, f"{dataset}: no timed runs with accuracy")
            continue
        _bubble_panel(ax, sub, colors, size_per_gb)
        ax.set_title(dataset, fontsize=10)
        ax.set_xlabel("Training step time (s / step)")
        ax.set_ylabel("Test accuracy (%)")
    handles = [Line2D([], [], marker="o", linestyle="", markersize=8, color=colors[a], label=a)
               for a in report.algorithms if a in set(frame.algorithm)]
    if handles:
        fig.legend(handles=handles, title="Algorithm", loc="outside right upper")
    fig.suptitle("Accuracy vs training step time (bubble area ∝ peak memory)\n"
                 "step time = update compute per step; data wait excluded (data_time, CSV)\n"
                 f"accuracy: Averages table, {method.name}", fontsize=10)
    return save_figure(fig, frame, stem)


def _curve_panel(ax, sub: pd.DataFrame, colors: dict) -> None:
    for algorithm in dict.fromkeys(sub.algorithm):
        a = sub[sub.algorithm == algorithm]
        for kind, style in (("test", "-"), ("val", "--")):
            mean, err = a[f"{kind}_mean"], a[f"{kind}_err"].fillna(0)
            ax.plot(a.step, mean, style, color=colors[algorithm], marker="o", markersize=2.5,
                    label=f"{algorithm} {kind}")
            ax.fill_between(a.step, mean - err, mean + err, color=colors[algorithm], alpha=0.15,
                            linewidth=0)
    ax.grid(alpha=0.3)


def accuracy_curves(records: Sequence[Record], report: Report, dataset: str,
                    stem: str | os.PathLike[str], selection: str = "iid") -> list[Path]:
    """Validation (dashed) and test (solid) accuracy vs step, one panel per test domain."""
    frame = figdata.curves_frame(records, report, dataset, selection)
    labels = report.environments[dataset]
    rows, cols = _grid(len(labels))
    fig = Figure(figsize=(4.0 * cols + 1.6, 3.0 * rows + 0.7), layout="constrained")
    colors = algorithm_colors(report.algorithms)
    for i, label in enumerate(labels):
        ax = fig.add_subplot(rows, cols, i + 1)
        sub = frame[frame.test_env == label]
        if sub.empty:
            _empty(ax, f"test domain {label}: no runs")
            continue
        _curve_panel(ax, sub, colors)
        ax.set_title(f"test domain {label}", fontsize=9)
        ax.set_xlabel("Step")
        ax.set_ylabel("Accuracy (%)")
    present = [a for a in report.algorithms if a in set(frame.algorithm)]
    handles = [Line2D([], [], color=colors[a], label=a) for a in present]
    handles += [Line2D([], [], color="gray", linestyle="-", label="test domain"),
                Line2D([], [], color="gray", linestyle="--", label="training-domain val")]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    fig.suptitle(f"{dataset}: accuracy vs step (mean ± s.e. over trials; hparams chosen by "
                 f"{selection})", fontsize=10)
    return save_figure(fig, frame, stem)


def _load_panel(ax, sub: pd.DataFrame, color) -> None:
    ranks = sorted(sub.expert_rank.unique())
    data = [sub[sub.expert_rank == r].load_pct.to_numpy(dtype=float) for r in ranks]
    box = ax.boxplot(data, positions=ranks, widths=0.6, patch_artist=True,
                     medianprops={"color": "black"})
    for patch in box["boxes"]:
        patch.set_facecolor(color)
        patch.set_alpha(0.6)
    active = sub.active_experts.dropna()  # MASS: experts in use (the load list has room for more)
    n_experts = float(active.mean()) if len(active) else float(sub.n_experts.mean())
    ax.axhline(100.0 / n_experts, color="black", linestyle=":", linewidth=1,
               label="uniform (1/E)" if active.empty else "uniform over active experts")
    ax.set_xlabel("Expert (ranked by load)")
    ax.set_ylabel("Load (% of routed tokens)")
    ax.grid(axis="y", alpha=0.3)


def _dropped_panel(ax, sub: pd.DataFrame, color) -> None:
    per_ckpt = sub.drop_duplicates(["layer", "trial_seed", "test_env", "step"])
    layers = sorted(set(per_ckpt.layer), key=_natural_key)
    stats = [Cell(tuple(per_ckpt[per_ckpt.layer == lay].dropped_pct.dropna() / 100.0))
             for lay in layers]
    means = [np.nan if c.mean is None else c.mean for c in stats]
    errs = [0.0 if c.err is None else c.err for c in stats]
    ax.bar(range(len(layers)), means, yerr=errs, color=color, alpha=0.7, capsize=3,
           edgecolor="black", linewidth=0.5)
    ax.set_xticks(range(len(layers)), [lay.replace(".mlp", "") for lay in layers], fontsize=7,
                  rotation=20)
    top = np.nanmax(np.asarray(means, dtype=float) + np.asarray(errs), initial=0.0)
    ax.set_ylim(0.0, 1.0 if not top > 0 else 1.15 * top)
    ax.set_ylabel("Dropped (% of token choices)")
    ax.set_title("dropped by capacity", fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def expert_load(report: Report, dataset: str, stem: str | os.PathLike[str],
                selection: str = "iid") -> list[Path]:
    """Per MoE algorithm (rows) and layer (columns): box plot of expert loads by rank over
    the selected checkpoints, plus a panel of the dropped fraction per layer."""
    frame = figdata.expert_load_frame(report, dataset, selection)
    algorithms = [a for a in report.algorithms if a in set(frame.algorithm)]
    if not algorithms:
        fig = Figure(figsize=(6, 2.5), layout="constrained")
        _empty(fig.add_subplot(), f"{dataset}: no MoE routing statistics in the records")
        return save_figure(fig, frame, stem)
    layers = {a: sorted(set(frame[frame.algorithm == a].layer), key=_natural_key)
              for a in algorithms}
    colors = algorithm_colors(report.algorithms)
    cols = max(len(v) for v in layers.values()) + 1
    fig = Figure(figsize=(3.3 * cols, 2.9 * len(algorithms) + 0.6), layout="constrained")
    for i, algorithm in enumerate(algorithms):
        sub = frame[frame.algorithm == algorithm]
        for j, layer in enumerate(layers[algorithm]):
            ax = fig.add_subplot(len(algorithms), cols, i * cols + j + 1)
            _load_panel(ax, sub[sub.layer == layer], colors[algorithm])
            ax.set_title(f"{algorithm} · {layer}", fontsize=9)
            if i == j == 0:
                ax.legend(fontsize=7, loc="upper right")
        _dropped_panel(fig.add_subplot(len(algorithms), cols, i * cols + cols), sub,
                       colors[algorithm])
    fig.suptitle(f"{dataset}: expert load per MoE layer at the checkpoints chosen by "
                 f"{selection} (over trials × test domains)", fontsize=10)
    return save_figure(fig, frame, stem)


def figure_stems(datasets: Sequence[str], selection: str = "iid",
                 kinds: Sequence[str] = FIGURE_KINDS) -> dict[str, list[str]]:
    """File stems (no extension) each kind writes: ``{kind: [stem, ...]}``."""
    stems: dict[str, list[str]] = {}
    for kind in kinds:
        if kind == "bubble":
            stems[kind] = [f"bubble_{selection}"]
        elif kind == "curves":
            stems[kind] = [f"curves_{slug(d)}" for d in datasets]
        elif kind in ("accuracy", "expert_load"):
            stems[kind] = [f"{kind}_{selection}_{slug(d)}" for d in datasets]
        else:
            raise DataError(f"unknown figure kind {kind!r}; valid: {', '.join(FIGURE_KINDS)}")
    return stems


def write_figures(records: Sequence[Record], out_dir: str | os.PathLike[str], *,
                  selection: str = "iid", kinds: Sequence[str] = FIGURE_KINDS,
                  algorithm_order: Sequence[str] = DEFAULT_ALGORITHM_ORDER) -> list[Path]:
    """Build the tables' report from normalised records and write the requested figures."""
    if not records:
        raise DataError("no records to draw")
    report = build_report(records, algorithm_order=algorithm_order)
    figdata.method_results(report, selection)  # unknown selection: one clear error first
    datasets = list(report.environments)
    out = Path(out_dir)
    written: list[Path] = []
    for kind, stems in figure_stems(datasets, selection, kinds).items():
        for dataset, stem in zip(datasets if kind != "bubble" else [None], stems):
            path = out / stem
            if kind == "accuracy":
                written += accuracy_bars(report, dataset, path, selection)
            elif kind == "bubble":
                written += bubble_chart(records, report, path, selection)
            elif kind == "curves":
                written += accuracy_curves(records, report, dataset, path, selection)
            else:
                written += expert_load(report, dataset, path, selection)
            logger.info("wrote %s.{png,pdf,csv}", path)
    return written
