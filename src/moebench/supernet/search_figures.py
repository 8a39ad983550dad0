"""The search figures: BLEU against measured latency per variant (the frontier), and the
latency predictor's predicted against measured latency. Each figure is written as PNG, PDF
and the CSV of exactly the plotted points."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from moebench.io import atomic_write, atomic_write_text  # noqa: E402

VARIANT_STYLE = {"hat": ("tab:blue", "o"), "mos_layer": ("tab:orange", "s"),
                 "mos_neuron": ("tab:green", "^")}
MODE_LINE = {"inherited": ":", "retrained": "-", "scratch": "--"}


def _save(fig, frame: pd.DataFrame, stem: str | Path) -> list[Path]:
    stem = Path(stem)
    paths = []
    for ext in ("png", "pdf"):
        paths.append(atomic_write(stem.with_suffix(f".{ext}"),
                                  lambda fh, e=ext: fig.savefig(fh, format=e, dpi=150,
                                                                bbox_inches="tight")))
    paths.append(atomic_write_text(stem.with_suffix(".csv"), frame.to_csv(index=False)))
    plt.close(fig)
    return paths


def frontier_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """One point per (run, limit, BLEU kind): latency = the final model's gold latency where
    retrained (else the search's gold measurement)."""
    pts = []
    for r in rows:
        for kind, key in (("inherited", "bleu_inherited"), ("retrained", "bleu_retrained"),
                          ("scratch", "bleu_scratch")):
            if r.get(key) is not None:
                pts.append({"run": r["run"], "variant": r["variant"], "limit": r["limit"],
                            "limit_ms": r["limit_ms"], "kind": kind,
                            "latency_ms": r["final_ms"] if r["final_ms"] is not None
                            else r["gold_ms"], "bleu": r[key]})
    return pd.DataFrame(pts, columns=["run", "variant", "limit", "limit_ms", "kind",
                                      "latency_ms", "bleu"])


def frontier_figure(rows: Sequence[dict], stem: str | Path, title: str = "") -> list[Path]:
    """BLEU vs latency, one colour per variant, one line style per BLEU kind."""
    frame = frontier_frame(rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    for (run, kind), part in frame.groupby(["run", "kind"], sort=True):
        part = part.sort_values("latency_ms")
        color, marker = VARIANT_STYLE.get(part["variant"].iloc[0], ("tab:gray", "x"))
        ax.plot(part["latency_ms"], part["bleu"], MODE_LINE.get(kind, "-"), marker=marker,
                color=color, label=f"{run} ({kind})")
    for ms in sorted(frame["limit_ms"].unique()) if len(frame) else []:
        ax.axvline(ms, color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("BLEU (test)")
    ax.set_title(title or "BLEU vs latency of the searched subnets")
    if len(frame):
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no retrained subnets", ha="center", transform=ax.transAxes)
    return _save(fig, frame, stem)


def predictor_figure(predictions: pd.DataFrame, stem: str | Path, title: str = "") -> list[Path]:
    """Predicted vs measured latency (every dataset row; the held-out test rows highlighted)."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for split, style in (("train", dict(color="0.7", s=8)), ("valid", dict(color="tab:blue", s=12)),
                         ("test", dict(color="tab:red", s=18))):
        part = predictions[predictions["split"] == split]
        ax.scatter(part["measured_ms"], part["mlp_ms"], label=f"MLP, {split}", **style)
    test = predictions[predictions["split"] == "test"]
    ax.scatter(test["measured_ms"], test["linear_ms"], marker="x", color="k", s=14,
               label="linear, test")
    lo = float(min(predictions["measured_ms"].min(), predictions["mlp_ms"].min()))
    hi = float(max(predictions["measured_ms"].max(), predictions["mlp_ms"].max()))
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title or "latency predictor")
    ax.legend(fontsize=7)
    return _save(fig, predictions, stem)
