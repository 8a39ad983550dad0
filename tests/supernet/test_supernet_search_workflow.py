"""End to end: the real workflow on tiny params builds the search tables, headline and
figures into results/tables next to part 1's; bad search params stop it with one line."""
import csv
import json
import re

import pytest

from helpers_supernet_search import SEARCH_TINY
from test_supernet_workflow import _setup, _snakemake, assert_one_params_error


@pytest.mark.slow
def test_workflow_builds_the_search_tables_and_figures(tmp_path):
    _setup(tmp_path, SEARCH_TINY)
    out = _snakemake(tmp_path, "--", "results/tables")
    assert out.returncode == 0, out.stderr[-3000:]
    t = tmp_path / "results/tables"
    for name in ("search", "search_predictor", "search_compare"):
        for ext in ("txt", "md", "csv", "tex"):
            assert (t / f"{name}.{ext}").stat().st_size > 0
    assert (t / "search_vs_paper.md").exists() and (t / "supernet.txt").exists()
    rows = list(csv.DictReader((t / "search.csv").open()))
    assert [(r["run"], r["limit"]) for r in rows] == [
        (run, lim) for run in ("hat-s1", "mos_layer-e2-s1", "mos_neuron-e2-s1")
        for lim in ("q50", "1e+06ms")]
    for r in rows:
        assert r["bleu_inherited"] and r["bleu_retrained"] and r["bleu_scratch"]
        assert r["within_limit"] == str(float(r["gold_ms"]) <= float(r["limit_ms"])
                                        and float(r["final_ms"]) <= float(r["limit_ms"]))
    assert all(r["within_limit"] == "True" for r in rows if r["limit"] == "1e+06ms")
    paper = list(csv.DictReader((t / "search_vs_paper.csv").open()))
    assert sum(r["source"] == "HAT paper" for r in paper) == 27
    assert [r["note"].startswith("not retrieved") for r in paper if r["source"] == "MoS paper"] \
        == [True, True]
    middle = {r["run"]: r for r in rows if r["limit"] == "1e+06ms"}  # limits[len // 2]
    for run, r in middle.items():  # the compact DVC metrics: the middle limit's BLEU, latency
        metrics = json.loads((t / f"metrics/search_{run}.json").read_text())
        assert set(metrics) == {"bleu", "ms"}
        assert metrics["bleu"] == round(float(r["bleu_retrained"]), 2)
        assert metrics["ms"] == round(float(r["final_ms"] or r["gold_ms"]), 1)
    for stem in ("supernet_frontier", "supernet_predictor"):
        for ext in ("png", "pdf", "csv"):
            assert (tmp_path / f"results/figures/{stem}.{ext}").stat().st_size > 0
    final = json.loads((tmp_path / "results/supernet/latency/final.json").read_text())
    assert set(final) == {"hat-s1", "mos_layer-e2-s1", "mos_neuron-e2-s1"}
    summary = json.loads((tmp_path / "results/supernet/latency/summary.json").read_text())
    assert summary["rows"] == 30 and summary["repeats"] == 6 and summary["threads"] == 1
    # the default drift correction: gold latencies of the final models are scaled to the
    # dataset's reference time (raw_ms: as measured)
    assert summary["reference"]["subnet"] == "smallest"
    assert summary["reference"]["calibration_ms"] > 0 and "mapd_uncorrected" in summary["spread"]
    assert all("raw_ms" in r for modes in final.values() for lims in modes.values()
               for r in lims.values())
    again = _snakemake(tmp_path, "-n", "--", "results/tables")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.parametrize("extra,message", [
    ({"search": {"limits": [{"quantile": 2}]}},
     r"supernet.search.limits\[0\].quantile: 2 must be a number in \(0, 1\)"),
    ({"retrain": {"scratch": {"steps": 3, "lr": "1e-3"}}},
     r"supernet.retrain.scratch.lr: '1e-3' must be a positive number"),
    ({"latency": {"measure": {"beam": 0}}}, r"supernet.latency.measure.beam: 0 must be a positive"),
    ({"latency": {"measure": {"reference": "median"}}},
     r"supernet.latency.measure.reference: 'median' must be null or one of smallest, largest"),
])
def test_bad_search_params_stop_the_workflow_with_one_line(tmp_path, extra, message):
    assert_one_params_error(tmp_path, extra, message)


def test_paper_search_dry_run_lists_the_jobs(tmp_path):
    import shutil
    import subprocess
    import sys

    from test_supernet_workflow import ROOT

    for name in ("Snakefile", "workflow", "params"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    (tmp_path / "only.yaml").write_text("studies: [supernet]\n")
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile",
         "params/paper/mos_wmt14_en_de.yaml", "params/paper/hat_search_wmt14_en_de.yaml",
         "only.yaml", "--", "supernet_search_all"], cwd=tmp_path, capture_output=True,
        text=True, timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    jobs = dict(re.findall(r"^(supernet_\w+)\s+(\d+)$", text, re.M))
    assert jobs["supernet_latency_dataset"] == "1" and jobs["supernet_predictor"] == "1"
    assert jobs["supernet_search"] == "4" and jobs["supernet_retrain"] == "4"
    assert "supernet_search_compare" not in jobs  # compare: null at paper scale
    assert "results/supernet/search/mos_neuron-e6-s1/150ms.json" in text
