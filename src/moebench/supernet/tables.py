"""The supernet table: HAT vs MoS layer-wise vs MoS neuron-wise on the same subnets.

Input: the evaluation JSONs of :mod:`moebench.cli.supernet.bleu` (one per trained supernet,
``--standard``). Per architecture (largest, smallest, sampled_i) and supernet (variant, E):
valid loss (label-smoothed, nats per target token), beam BLEU, chrF and greedy BLEU, the
mean over seeds (``n`` seeds; +- the standard deviation when n > 1). Written as
``supernet.{txt,md,csv,tex}``, ``headline.json`` (flat, at most 15 numbers) and a figure of
valid loss and BLEU against subnet size.
"""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from moebench.errors import DataError
from moebench.io import atomic_write, atomic_write_json, atomic_write_text

METRICS = (("valid_loss", "valid loss"), ("bleu", "BLEU"), ("chrf", "chrF"),
           ("bleu_greedy", "BLEU greedy"))
ORDER = {"hat": 0, "mos_layer": 1, "mos_neuron": 2}


def supernet_label(variant: str, experts: int) -> str:
    return "hat" if variant == "hat" else f"{variant} E={experts}"


def load_evals(paths: Sequence[str | Path]) -> dict:
    """{(label, arch name): {metric: [values over seeds], "params": int, "arch": dict}}
    plus the ordered labels and arch names."""
    cells: dict = defaultdict(lambda: defaultdict(list))
    labels, names, signature = [], [], None
    for p in paths:
        try:
            d = json.loads(Path(p).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{p}: not an evaluation JSON ({exc})") from None
        label = supernet_label(d["variant"], d["num_experts"])
        labels.append((ORDER.get(d["variant"], 9), d["num_experts"], label))
        for name, r in d["archs"].items():
            names.append(name) if name not in names else None
            c = cells[(label, name)]
            c["valid_loss"].append(r["valid_loss"])
            c["bleu"].append(r["beam"]["bleu"])
            c["chrf"].append(r["beam"]["chrf"])
            if "greedy" in r:
                c["bleu_greedy"].append(r["greedy"]["bleu"])
            c["params"] = r["params"]
            signature = r["beam"]["bleu_signature"]
    return {"cells": cells, "labels": [x[2] for x in sorted(set(labels))], "archs": names,
            "signature": signature}


def _fmt(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} +- {np.std(values, ddof=1):.{digits}f}"


def table_rows(ev: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per (architecture, supernet)."""
    header = ["architecture", "params", "supernet", "seeds"] + [m[1] for m in METRICS]
    rows = []
    for name in ev["archs"]:
        for label in ev["labels"]:
            c = ev["cells"].get((label, name))
            if c is None:
                continue
            rows.append([name, str(c["params"]), label, str(len(c["valid_loss"]))] + [
                _fmt(c[k], 4 if k == "valid_loss" else 2) for k, _ in METRICS])
    return header, rows


def render_txt(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]) + "\n"


def render_md(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def render_csv(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header] + rows)
    return buf.getvalue()


def render_tex(header: list[str], rows: list[list[str]], caption: str) -> str:
    esc = lambda s: s.replace("_", r"\_").replace("+-", r"$\pm$")  # noqa: E731
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{" + "l" * 4 + "r" * (len(header) - 4) + "}", r"\toprule",
             " & ".join(esc(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(v) for v in r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + esc(caption) + "}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"


def headline(ev: dict) -> dict[str, float]:
    """The compact ``dvc metrics`` numbers: per supernet, the largest subnet's valid loss and
    BLEU (means over seeds; keys ``supernet/<variant>/loss|bleu``; the rest: the tables)."""
    out: dict[str, float] = {}
    for label in ev["labels"]:
        c = ev["cells"].get((label, "largest"))
        if c is not None:
            key = label.replace(" E=", "_e")
            out[f"supernet/{key}/loss"] = round(float(np.mean(c["valid_loss"])), 3)
            out[f"supernet/{key}/bleu"] = round(float(np.mean(c["bleu"])), 2)
    return out


def write_tables(ev: dict, out_dir: str | Path) -> dict[str, Any]:
    """supernet.{txt,md,csv,tex} and headline.json under ``out_dir``; returns the headline."""
    out = Path(out_dir)
    header, rows = table_rows(ev)
    caption = ("Subnets of trained supernets with inherited weights: valid loss "
               "(label-smoothed CE, nats/token), test BLEU / chrF (beam 4, lenpen 0.6) and "
               f"greedy BLEU; sacrebleu {ev['signature']}")
    atomic_write_text(out / "supernet.txt", caption + "\n\n" + render_txt(header, rows))
    atomic_write_text(out / "supernet.md", caption + "\n\n" + render_md(header, rows))
    atomic_write_text(out / "supernet.csv", render_csv(header, rows))
    atomic_write_text(out / "supernet.tex", render_tex(header, rows, caption))
    head = headline(ev)
    atomic_write_json(out / "headline.json", head)
    return head


def write_figure(ev: dict, prefix: str | Path) -> list[Path]:
    """``<prefix>subnets.{png,pdf,csv}``: valid loss and BLEU against subnet parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    header = ["supernet", "architecture", "params", "valid_loss", "bleu"]
    data = [[label, name, c["params"], float(np.mean(c["valid_loss"])), float(np.mean(c["bleu"]))]
            for (label, name), c in ev["cells"].items()]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for label in ev["labels"]:
        pts = sorted((r[2], r[3], r[4]) for r in data if r[0] == label)
        for ax, j in ((axes[0], 1), (axes[1], 2)):
            ax.plot([p[0] for p in pts], [p[j] for p in pts], "o-", label=label, alpha=0.8)
    for ax, what in ((axes[0], "valid loss (nats/token)"), (axes[1], "test BLEU (beam 4)")):
        ax.set_xlabel("subnet parameters")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    base = str(prefix) + "subnets"
    paths = []
    for ext in ("png", "pdf"):
        atomic_write(f"{base}.{ext}", lambda fh, e=ext: fig.savefig(fh, format=e, dpi=120))
        paths.append(Path(f"{base}.{ext}"))
    plt.close(fig)
    atomic_write_text(f"{base}.csv", render_csv(header, [[str(v) for v in r] for r in data]))
    return paths + [Path(f"{base}.csv")]
