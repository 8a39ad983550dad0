"""The search tables: per supernet run and latency limit the found subnet, its predicted and
measured latency, valid loss and BLEU (inherited, retrained from inherited weights, from
scratch); HAT's published latency -> BLEU points next to ours; the predictor against the
linear baseline and the measurement spread; evolution against random search.

Each table is written as ``<name>.txt`` (aligned), ``.md``, ``.csv`` and ``.tex``.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from moebench.io import atomic_write_text

Row = dict[str, Any]
SEARCH_COLUMNS = (
    ("run", "run"), ("variant", "variant"), ("limit", "limit"), ("limit_ms", "limit ms"),
    ("arch", "architecture"), ("predicted_ms", "predicted ms"), ("gold_ms", "measured ms"),
    ("valid_loss", "valid loss"), ("bleu_inherited", "BLEU inherited"),
    ("bleu_retrained", "BLEU inherited+steps"), ("bleu_scratch", "BLEU scratch"),
    ("chrf_retrained", "chrF inherited+steps"), ("final_ms", "final model ms"),
    ("within_limit", "within limit"))
PAPER_COLUMNS = (("source", "source"), ("method", "method"), ("task", "task"),
                 ("hardware", "hardware"), ("latency_ms", "latency ms"), ("bleu", "BLEU"),
                 ("sacrebleu", "SacreBLEU"), ("comparable", "comparable"), ("note", "note"))
NOT_RETRIEVED = "not retrieved"


def arch_text(arch: Mapping[str, Any]) -> str:
    """A compact one-line form: ``enc 640x6 ffn 3072,... h 8,... | dec 512x2 ...``."""
    le, ld = int(arch["encoder_layer_num"]), int(arch["decoder_layer_num"])
    j = lambda key, n: ",".join(str(v) for v in arch[key][:n])  # noqa: E731
    return (f"enc {arch['encoder_embed_dim']}x{le} ffn {j('encoder_ffn_embed_dim', le)} "
            f"h {j('encoder_self_attention_heads', le)} | dec {arch['decoder_embed_dim']}x{ld} "
            f"ffn {j('decoder_ffn_embed_dim', ld)} h {j('decoder_self_attention_heads', ld)} "
            f"x {j('decoder_ende_attention_heads', ld)} a {j('decoder_arbitrary_ende_attn', ld)}")


def _get(d: Optional[Mapping[str, Any]], *path: str) -> Any:
    for key in path:
        if not isinstance(d, Mapping) or key not in d:
            return None
        d = d[key]
    return d


def search_rows(search: Mapping[str, Mapping[str, Any]],
                retrain: Mapping[str, Mapping[str, Any]],
                final: Optional[Mapping[str, Any]] = None) -> list[Row]:
    """Rows of ``search.*``: ``search[run][limit]`` (gold-checked search results),
    ``retrain[run][mode]`` (the retrain command line's outputs) and ``final[run][mode][limit]``
    (the final models' gold latency)."""
    rows = []
    for run, limits in search.items():
        for limit, res in limits.items():
            inh = _get(retrain.get(run), "inherited", "limits", limit)
            scr = _get(retrain.get(run), "scratch", "limits", limit)
            finals = [x["latency_ms"] for x in (_get(final, run, mode, limit)
                                                for mode in ("inherited", "scratch")) if x]
            within = bool(res["within_limit"]) and all(f <= res["limit_ms"] for f in finals)
            rows.append({
                "run": run, "variant": res["variant"], "limit": limit,
                "limit_ms": res["limit_ms"], "arch": arch_text(res["arch"]),
                "predicted_ms": res["predicted_ms"], "gold_ms": res["gold_ms"],
                "valid_loss": res["valid_loss"],
                "bleu_inherited": _get(inh, "bleu_start", "bleu"),
                "bleu_retrained": _get(inh, "bleu", "bleu"),
                "bleu_scratch": _get(scr, "bleu", "bleu"),
                "chrf_retrained": _get(inh, "bleu", "chrf"),
                "final_ms": max(finals) if finals else None, "within_limit": within,
                "steps_inherited": _get(inh, "steps"), "steps_scratch": _get(scr, "steps")})
    return rows


def paper_rows(published: Mapping[str, Any], ours: Sequence[Row], task: str) -> list[Row]:
    """HAT's published (latency, BLEU) points, MoS's (not retrieved: empty, marked) and ours."""
    rows: list[Row] = []
    for entry in published.get("hat", []):
        for point in entry["points"]:
            rows.append({"source": "HAT paper", "method": "hat", "task": entry["task"],
                         "hardware": entry["hardware"], "latency_ms": point[0],
                         "bleu": point[1], "sacrebleu": point[2] if len(point) > 2 else None,
                         "comparable": "", "note": entry.get("note", "")})
    for method in ("mos_layer", "mos_neuron"):
        rows.append({"source": "MoS paper", "method": method, "task": "", "hardware": "",
                     "latency_ms": None, "bleu": None, "sacrebleu": None, "comparable": "",
                     "note": f"{NOT_RETRIEVED}: {published.get('mos', NOT_RETRIEVED)}"})
    tasks = {e["task"] for e in published.get("hat", [])}
    for r in ours:
        rows.append({"source": "ours", "method": r["variant"], "task": task,
                     "hardware": r.get("hardware", ""), "latency_ms": r["final_ms"] or r["gold_ms"],
                     "bleu": r["bleu_retrained"] if r["bleu_retrained"] is not None
                     else r["bleu_scratch"], "sacrebleu": None,
                     "comparable": "yes" if task in tasks else "no (other task)",
                     "note": f"{r['run']} {r['limit']}"})
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def render(rows: Sequence[Row], columns: Sequence[tuple[str, str]], kind: str) -> str:
    """``rows`` as txt (aligned), md, csv or tex."""
    head = [h for _, h in columns]
    body = [[_fmt(r.get(k)) for k, _ in columns] for r in rows]
    if kind == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([k for k, _ in columns])
        w.writerows([["" if r.get(k) is None else r.get(k) for k, _ in columns] for r in rows])
        return buf.getvalue()
    if kind == "md":
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body]) + "\n"
    if kind == "tex":
        esc = lambda s: s.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace(  # noqa
            "&", "\\&").replace("%", "\\%").replace("|", "\\textbar{}")
        lines = ["\\begin{tabular}{" + "l" * len(head) + "}", "\\toprule",
                 " & ".join(esc(h) for h in head) + " \\\\", "\\midrule"]
        lines += [" & ".join(esc(c) for c in b) + " \\\\" for b in body]
        return "\n".join(lines + ["\\bottomrule", "\\end{tabular}"]) + "\n"
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]) + "\n"


def write_table(folder: str | Path, name: str, rows: Sequence[Row],
                columns: Sequence[tuple[str, str]],
                kinds: Sequence[str] = ("txt", "md", "csv", "tex")) -> list[Path]:
    """``folder/name.<kind>`` for every kind."""
    return [atomic_write_text(Path(folder) / f"{name}.{k}", render(rows, columns, k))
            for k in kinds]


PREDICTOR_COLUMNS = (("model", "latency model"), ("rmse_ms", "RMSE ms"), ("mapd", "MAPD %"),
                     ("rows", "rows"))
COMPARE_COLUMNS = (("seed", "seed"), ("evaluations", "evaluations"),
                   ("evolution", "evolution valid loss"), ("random", "random valid loss"),
                   ("evolution_wins", "evolution <= random"))


def predictor_rows(report: Mapping[str, Any]) -> list[Row]:
    """The held-out test part: MLP, linear baseline, train mean; then the re-measurement."""
    n = report["rows"]["test"]
    rows = [{"model": name, **report["test"][key], "rows": n} for key, name in (
        ("mlp", "HAT MLP (4 x 400 ReLU)"), ("linear", "least-squares linear"),
        ("mean", "train mean"))]
    s = report["spread"]
    rows.append({"model": "re-measurement (run-to-run spread)", "rmse_ms": s["rmse_ms"],
                 "mapd": s["mapd"], "rows": s["pairs"]})
    if s.get("mapd_uncorrected") is not None:  # measured beside a reference subnet
        rows[-1]["model"] = "re-measurement, drift-corrected (run-to-run spread)"
        rows.append({"model": "re-measurement, uncorrected", "rmse_ms": None,
                     "mapd": s["mapd_uncorrected"], "rows": s["pairs"]})
    return rows


def headline(rows: Sequence[Row], limit: Optional[str]) -> dict[str, Any]:
    """The compact ``dvc metrics`` numbers: per searched supernet, at the middle latency limit,
    the found subnet's BLEU after retraining (from inherited weights, else from scratch) and
    its measured latency (keys ``search/<run>/bleu|ms``; predictor and evolution-vs-random
    figures: the search tables)."""
    out: dict[str, Any] = {}
    for r in rows:
        if r["limit"] != limit:
            continue
        bleu = r["bleu_retrained"] if r["bleu_retrained"] is not None else r["bleu_scratch"]
        ms = r["final_ms"] or r["gold_ms"]
        if bleu is not None:
            out[f"search/{r['run']}/bleu"] = round(float(bleu), 2)
        if ms is not None:
            out[f"search/{r['run']}/ms"] = round(float(ms), 1)
    return out


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
