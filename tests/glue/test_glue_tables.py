"""Collect, tables, headline and figure of the GLUE study, on hand-made records."""
from __future__ import annotations

import csv
import json

import pytest

from moebench.glue.collect import summarize
from moebench.glue.figures import write_figure
from moebench.glue.tables import write_tables

LAYER = "hf.bert.encoder.layer.5.intermediate.moe"


def _record(task, method, seed, epoch, score, K=None, k=None, tokens=100, events=()):
    rec = {"task": task, "method": method, "seed": seed, "run_id": f"{task}-{method}-{seed}",
           "metric": "acc", "labels": "real", "val": {"accuracy": score}, "val_score": score,
           "epoch": epoch, "step": 10 * epoch, "step_time": 0.5, "args": {"n_steps": 30},
           "routing": {}, "trace": {}}
    if K is not None:
        rec["routing"] = {LAYER: {"num_experts": K, "mean_k": k, "tokens": tokens,
                                  "events": list(events)}}
        rec["trace"] = {LAYER: [[10 * epoch, K, k]]}
    return rec


def test_summary_of_a_run():
    expand = {"step": 3, "kind": "expand", "parent": 0, "slot": 8}
    recs = [_record("ding_paraphrase", "mass", 0, 1, 0.6, 8, 3.0, 100),
            _record("ding_paraphrase", "mass", 0, 2, 0.7, 9, 2.0, 300, [expand]),
            _record("ding_paraphrase", "mass", 0, 3, 0.65, 9, 2.0, 100, [expand])]
    s = summarize(recs)
    assert (s["score"], s["best_epoch"], s["epochs"], s["diverged"]) == (0.7, 2, 3, False)
    assert s["K"] == 9 and s["k"] == pytest.approx((300 + 600 + 200) / 500)   # token-weighted
    assert s["layers"][LAYER]["events"] == [expand]
    assert [p[0] for p in s["layers"][LAYER]["trace"]] == [10, 20, 30]
    low = summarize([_record("cola", "dense", 0, 1, -0.1),
                     {**_record("cola", "dense", 0, 2, 0.0), "diverged": True}])
    assert low["score"] == 0.0 and low["diverged"] and low["epochs"] == 1   # best starts at 0


def _summaries():
    out = []
    for seed, (a, b) in enumerate([(0.70, 0.80), (0.74, 0.84)]):
        out.append(summarize([_record("fortunes_topic", "dense", seed, 1, a)]))
        out.append(summarize([_record("ding_paraphrase", "dense", seed, 1, b)]))
        ev = [{"step": 2, "kind": "expand", "parent": 1, "slot": 8}] if seed else []
        out.append(summarize([_record("fortunes_topic", "mass", seed, 1, a + 0.01,
                                      8 + len(ev), 3.0, 100, ev)]))
        out.append(summarize([_record("ding_paraphrase", "mass", seed, 1, b - 0.01, 8, 2.5)]))
    return out


def test_tables_text_and_formats(tmp_path):
    write_tables(_summaries(), tmp_path, {"method_order": ["dense", "gmoe", "mass"]})
    text = (tmp_path / "glue.txt").read_text().splitlines()
    assert text[0].startswith("GLUE study: best-epoch validation score x 100")
    assert "population std (numpy std, ddof 0, as the MASS authors) over seeds [0, 1]" in text[0]
    assert "Fortunes-topic: real (the fortune file" in text[0] and "negatives built" in text[0]
    assert text[1:] == [
        "Method  Fortunes-topic  Ding-para   Avg         K    k",
        "------  --------------  ----------  ----------  ---  ----",
        "dense   72.0 ± 2.0      82.0 ± 2.0  77.0 ± 2.0  -    -",
        "mass    73.0 ± 2.0      81.0 ± 2.0  77.0 ± 2.0  8.2  2.75"]
    rows = list(csv.reader((tmp_path / "glue.csv").open()))
    assert rows[0] == ["Method", "Fortunes-topic", "Ding-para", "Avg", "K", "k"]
    assert rows[2] == ["mass", "73.0 ± 2.0", "81.0 ± 2.0", "77.0 ± 2.0", "8.2", "2.75"]
    assert "| mass | 73.0 ± 2.0 |" in (tmp_path / "glue.md").read_text()
    assert r"73.0 $\pm$ 2.0" in (tmp_path / "glue.tex").read_text()
    experts = (tmp_path / "glue_experts.txt").read_text().splitlines()
    assert experts[3].split() == ["mass", "Fortunes-topic", "8.0", "±", "0.0", "8.5", "±",
                                  "0.5", "3.00", "±", "0.00", "1", "0", "2"]


def test_paper_cells_are_empty_and_marked(tmp_path):
    write_tables(_summaries(), tmp_path, {"paper": {"source": "MASS", "note": "not retrieved",
                                                    "cells": {"mass": {"rte": 71.5}}}})
    rows = list(csv.DictReader((tmp_path / "glue_vs_paper.csv").open()))
    assert len(rows) == 2 * 5
    cola = next(r for r in rows if r["Method"] == "mass" and r["Task"] == "CoLA")
    assert cola["Ours"] == "" and cola["Paper"] == "" and \
        cola["Status"] == "paper value not retrieved; not run in this grid"
    rte = next(r for r in rows if r["Method"] == "mass" and r["Task"] == "RTE")
    assert rte["Paper"] == "71.5" and rte["Status"].startswith("paper value from params")


def test_headline_is_flat_and_small(tmp_path):
    write_tables(_summaries(), tmp_path, {})
    head = json.loads((tmp_path / "headline.json").read_text())
    assert head["glue/mass/avg"] == 77.0
    assert set(head) <= {f"glue/{m}/{c}" for m in ("dense", "gmoe", "mass") for c in ("avg", "K", "k")}
    assert "glue/dense/K" not in head and "glue/mass/K" in head and "glue/mass/k" in head
    assert all(isinstance(v, float) for v in head.values())


def test_figure_files(tmp_path):
    paths = write_figure(_summaries(), tmp_path / "glue_experts")
    assert sorted(p.suffix for p in paths) == [".csv", ".pdf", ".png"]
    rows = list(csv.DictReader((tmp_path / "glue_experts.csv").open()))
    assert {r["method"] for r in rows} == {"mass"}
    assert [r for r in rows if r["event"] == "expand"] == [
        {"task": "fortunes_topic", "method": "mass", "seed": "1", "layer": LAYER, "step": "2",
         "K": "", "k": "", "event": "expand"}]
    assert (tmp_path / "glue_experts.png").read_bytes()[:4] == b"\x89PNG"


def test_k_curve_from_events():
    from moebench.glue.figures import k_curve

    layer = {"K": 9, "events": [{"step": 5, "kind": "expand"}, {"step": 7, "kind": "expand"},
                                {"step": 9, "kind": "remove"}]}
    assert k_curve(layer, 30) == ([0, 5, 7, 9, 30], [8, 9, 10, 9, 9])
