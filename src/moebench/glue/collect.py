"""Collect the GLUE runs of a plan into one summary per run (what tables and figures read).

Per run: the best epoch's validation score and metric values (the authors' protocol: the
highest score over the evaluated epochs, 0 if it never rose above 0), and per MoE layer the
final number of experts K (at the end of training), the mean number of active experts per
token k over all training tokens of the run (the authors' running ``avg_k``), the expansion
events, and the trace of K and k over the steps.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from moebench.errors import RunError
from moebench.runs import RunState


def _layers(records: list[dict]) -> dict[str, dict[str, Any]]:
    """Per MoE layer: final K, token-weighted mean k, events, trace."""
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        for name, st in (rec.get("routing") or {}).items():
            layer = out.setdefault(name, {"choices": 0.0, "tokens": 0, "trace": [],
                                          "events": []})
            layer["choices"] += float(st.get("mean_k", 0.0)) * int(st.get("tokens", 0))
            layer["tokens"] += int(st.get("tokens", 0))
            layer["K"] = int(st.get("num_experts", 0))
            layer["events"] = list(st.get("events", layer["events"]))
            layer["trace"] += (rec.get("trace") or {}).get(name, [])
    for layer in out.values():
        layer["k"] = layer["choices"] / layer["tokens"] if layer["tokens"] else None
        del layer["choices"]
    return out


def summarize(records: list[dict]) -> Optional[dict[str, Any]]:
    """The summary of one run's records (None for a run with no record)."""
    if not records:
        return None
    evals = [r for r in records if not r.get("diverged")]
    best = max(evals, key=lambda r: r["val_score"], default=None)
    first = records[0]
    score = best["val_score"] if best is not None and best["val_score"] > 0 else 0.0
    layers = _layers(evals)
    return {"task": first["task"], "method": first["method"], "seed": first["seed"],
            "run_id": first["run_id"], "metric": first["metric"],
            "labels": first.get("labels", "real"), "score": score,
            "values": best["val"] if best is not None else {},
            "best_epoch": best["epoch"] if best is not None else 0,
            "epochs": len(evals), "diverged": any(r.get("diverged") for r in records),
            "step_time": (sum(r["step_time"] for r in evals) / len(evals)) if evals else None,
            "n_steps": first["args"]["n_steps"], "layers": layers,
            "K": _mean([v["K"] for v in layers.values()]),
            "k": _mean([v["k"] for v in layers.values() if v["k"] is not None])}


def _mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def collect(plan: Mapping[str, Any], require_done: bool = True) -> list[dict[str, Any]]:
    """Summaries of every run of the plan, in plan order."""
    out = []
    for entries in plan["batches"].values():
        for entry in entries:
            state = RunState(entry["run_dir"])
            if require_done and not state.is_done():
                raise RunError(f"run {entry['run_dir']} is not done (train it first)")
            summary = summarize(state.records())
            if summary is None:
                raise RunError(f"run {entry['run_dir']} has no record")
            out.append(summary)
    return out


def all_records(plan: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    """Every record of every run of the plan."""
    for entries in plan["batches"].values():
        for entry in entries:
            yield from RunState(Path(entry["run_dir"])).records()
