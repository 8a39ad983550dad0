"""Figure ``glue_experts``: number of experts K and mean active experts k over the training
steps of the MoE methods, one panel per task, expansion events marked (PNG + PDF + CSV)."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Mapping, Sequence

from moebench.glue.study import TASKS
from moebench.io import atomic_write, atomic_write_text

COLUMNS = ["task", "method", "seed", "layer", "step", "K", "k", "event"]


def figure_rows(summaries: Sequence[Mapping]) -> list[list]:
    """CSV rows: one per trace point and one per expansion / removal event."""
    rows = []
    for s in summaries:
        for name, layer in s["layers"].items():
            rows += [[s["task"], s["method"], s["seed"], name, st, K, k, ""]
                     for st, K, k in layer["trace"]]
            rows += [[s["task"], s["method"], s["seed"], name, e["step"], "", "", e["kind"]]
                     for e in layer["events"]]
    return rows


def _panel(ax_k, ax_kk, summaries: Sequence[Mapping], task: str) -> None:
    colors = {"mass": "tab:red", "gmoe": "tab:blue"}
    for s in summaries:
        if s["task"] != task or not s["layers"]:
            continue
        color = colors.get(s["method"], "tab:gray")
        for layer in s["layers"].values():
            tr = layer["trace"]
            if not tr:
                continue
            steps = [p[0] for p in tr]
            ax_k.step(steps, [p[1] for p in tr], where="post", color=color, alpha=0.8,
                      label=f"{s['method']} s{s['seed']}")
            ax_kk.plot(steps, [p[2] for p in tr], color=color, alpha=0.8)
            for e in layer["events"]:
                marker = "^" if e["kind"] == "expand" else "v"
                ax_k.axvline(e["step"], color=color, lw=0.5, ls=":")
                ax_k.plot([e["step"]], [_k_at(tr, e["step"])], marker, color=color)
    ax_k.set_title(TASKS[task].title if task in TASKS else task)
    ax_k.set_ylabel("experts K")
    ax_kk.set_ylabel("mean active k")
    ax_kk.set_xlabel("training step")


def _k_at(trace: Sequence[Sequence[float]], step: int) -> float:
    later = [p[1] for p in trace if p[0] >= step]
    return later[0] if later else trace[-1][1]


def write_figure(summaries: Sequence[Mapping], stem: str | Path) -> list[Path]:
    """``<stem>.png``, ``.pdf`` and ``.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem = Path(stem)
    tasks = list(dict.fromkeys(s["task"] for s in summaries))
    fig, axes = plt.subplots(2, max(1, len(tasks)), figsize=(4.5 * max(1, len(tasks)), 5.5),
                             sharex="col", squeeze=False)
    for j, task in enumerate(tasks):
        _panel(axes[0][j], axes[1][j], summaries, task)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles[:8], labels[:8], loc="upper right", fontsize=7)
    fig.suptitle("GLUE study: experts K and mean active k over training (▲ expansion, "
                 "▼ removal)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.9, 0.95))
    out = []
    for ext in ("png", "pdf"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=120)
        out.append(atomic_write(stem.with_suffix(f".{ext}"), lambda fh: fh.write(buf.getvalue())))
    plt.close(fig)
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([COLUMNS, *figure_rows(summaries)])
    out.append(atomic_write_text(stem.with_suffix(".csv"), text.getvalue()))
    return out
