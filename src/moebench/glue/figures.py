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


def k_curve(layer: Mapping, end: int) -> tuple[list[int], list[int]]:
    """(steps, K) of a layer's number of experts as a step function built from its events
    (K at the start = final K - expansions + removals)."""
    events = sorted(layer["events"], key=lambda e: e["step"])
    K = int(layer["K"]) - sum(1 if e["kind"] == "expand" else -1 for e in events)
    steps, ks = [0], [K]
    for e in events:
        K += 1 if e["kind"] == "expand" else -1
        steps.append(int(e["step"]))
        ks.append(K)
    steps.append(max(end, steps[-1]))
    ks.append(K)
    return steps, ks


def _panel(ax_k, ax_kk, summaries: Sequence[Mapping], task: str) -> None:
    colors = {"mass": "tab:red", "gmoe": "tab:blue"}
    styles = ["-", "--", ":", "-."]
    for s in summaries:
        if s["task"] != task or not s["layers"]:
            continue
        color, style = colors.get(s["method"], "tab:gray"), styles[int(s["seed"]) % 4]
        for layer in s["layers"].values():
            tr = layer["trace"]
            end = tr[-1][0] if tr else s.get("n_steps", 0)
            steps, ks = k_curve(layer, end)
            ax_k.step(steps, ks, where="post", color=color, ls=style, alpha=0.85,
                      label=f"{s['method']} seed {s['seed']}")
            for e, x, y in zip(sorted(layer["events"], key=lambda e: e["step"]), steps[1:],
                               ks[1:]):
                ax_k.plot([x], [y], "^" if e["kind"] == "expand" else "v", color=color)
            if tr:
                ax_kk.plot([p[0] for p in tr], [p[2] for p in tr], color=color, ls=style,
                           alpha=0.85)
    ax_k.set_title(TASKS[task].title if task in TASKS else task)
    ax_k.set_ylabel("experts K")
    ax_kk.set_ylabel("mean active k")
    ax_kk.set_xlabel("training step")


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
