"""The search tables, ours-vs-paper, headline and figures, from synthetic stage outputs."""
import csv
import json
from pathlib import Path

import pytest
import yaml

from moebench.cli.supernet import search_tables as cli
from moebench.supernet import search_tables as st
from moebench.supernet.search_params import check_published
from moebench.supernet.space import Space

ROOT = Path(__file__).resolve().parents[2]
SPACE = Space.from_params(yaml.safe_load((ROOT / "params/supernet/search.yaml").read_text())
                          ["supernet"]["space"])


def _search(variant, limit_ms, gold, within=True):
    return {"variant": variant, "arch": SPACE.smallest(), "limit_ms": limit_ms,
            "predicted_ms": limit_ms * 0.9, "gold_ms": gold, "valid_loss": 5.5,
            "within_limit": within}


def _retrain(mode, bleu, final_ms, start=None):
    res = {"bleu": {"bleu": bleu, "chrf": 2 * bleu}, "steps": 40, "final_ms": final_ms}
    if start is not None:
        res["bleu_start"] = {"bleu": start}
    return {"mode": mode, "limits": {"q50": res}}


def inputs():
    search = {"hat-s1": {"q50": _search("hat", 5.0, 4.8)},
              "mos_layer-e2-s1": {"q50": _search("mos_layer", 5.0, 4.9)}}
    retrain = {"hat-s1": {"inherited": _retrain("inherited", 3.5, 4.7, 2.0),
                          "scratch": _retrain("scratch", 1.5, 4.6)},
               "mos_layer-e2-s1": {"inherited": _retrain("inherited", 4.0, 5.2, 2.5),
                                   "scratch": _retrain("scratch", 1.0, 4.9)}}
    final = {run: {mode: {lim: {"latency_ms": r["final_ms"]} for lim, r in res["limits"].items()}
                   for mode, res in modes.items()} for run, modes in retrain.items()}
    return search, retrain, final


def test_rows_and_limit_flags():
    rows = st.search_rows(*inputs())
    hat, mos = rows
    assert (hat["bleu_inherited"], hat["bleu_retrained"], hat["bleu_scratch"]) == (2.0, 3.5, 1.5)
    assert hat["final_ms"] == 4.7 and hat["within_limit"]
    assert mos["final_ms"] == 5.2 and not mos["within_limit"]  # final model over the limit
    assert hat["arch"] == "enc 96x2 ffn 128,128 h 2,2 | dec 96x1 ffn 128 h 2 x 2 a -1"


def test_renderings_exact():
    rows = [{"a": 1.23456, "b": None, "c": True, "d": "x_y"}]
    cols = (("a", "A"), ("b", "B"), ("c", "C"), ("d", "D"))
    assert st.render(rows, cols, "md") == "| A | B | C | D |\n|---|---|---|---|\n| 1.235 |  | yes | x_y |\n"
    assert st.render(rows, cols, "csv") == "a,b,c,d\n1.23456,,True,x_y\n"
    assert st.render(rows, cols, "txt") == "A      B  C    D\n-----  -  ---  ---\n1.235     yes  x_y\n"
    tex = st.render(rows, cols, "tex")
    assert tex.startswith("\\begin{tabular}{llll}\n\\toprule\nA & B & C & D \\\\\n\\midrule\n")
    assert "1.235 &  & yes & x\\_y \\\\" in tex and tex.endswith("\\end{tabular}\n")


def test_paper_rows_hat_points_mos_not_retrieved_ours():
    published = yaml.safe_load((ROOT / "params/supernet/search.yaml").read_text())[
        "supernet"]["search"]["published"]
    check_published(published)
    rows = st.paper_rows(published, st.search_rows(*inputs()), "ding.en-de")
    hat = [r for r in rows if r["source"] == "HAT paper"]
    assert len(hat) == 5 + 5 + 6 + 6 + 5
    assert {"source": "HAT paper", "method": "hat", "task": "wmt14.en-de",
            "hardware": "NVIDIA TITAN Xp", "latency_ms": 57.1, "bleu": 25.8, "sacrebleu": 25.6,
            "comparable": "", "note": ""} in hat
    xeon = [r for r in hat if r["hardware"] == "Intel Xeon E5-2640"]
    assert [r["latency_ms"] for r in xeon][:6] == [137.9, 204.2, 278.7, 340.2, 369.6, 450.9]
    mos = [r for r in rows if r["source"] == "MoS paper"]
    assert len(mos) == 2 and all(r["bleu"] is None and r["latency_ms"] is None for r in mos)
    assert all(r["note"].startswith("not retrieved") for r in mos)
    ours = [r for r in rows if r["source"] == "ours"]
    assert [r["comparable"] for r in ours] == ["no (other task)"] * 2
    assert st.paper_rows(published, st.search_rows(*inputs()), "wmt14.en-de")[-1][
        "comparable"] == "yes"


def _write_inputs(tmp):
    search, retrain, final = inputs()
    for run, limits in search.items():
        for lim, res in limits.items():
            (tmp / "search" / run).mkdir(parents=True, exist_ok=True)
            (tmp / "search" / run / f"{lim}.json").write_text(json.dumps(res))
        for mode, res in retrain[run].items():
            (tmp / "retrain" / run).mkdir(parents=True, exist_ok=True)
            (tmp / "retrain" / run / f"{mode}.json").write_text(json.dumps(res))
    lat = tmp / "lat"
    lat.mkdir()
    (lat / "final.json").write_text(json.dumps(final))
    (lat / "summary.json").write_text(json.dumps({"device": "cpu: test"}))
    (lat / "predictor.json").write_text(json.dumps({
        "rows": {"test": 20}, "spread": {"pairs": 10, "mapd": 3.0, "rmse_ms": 0.2,
                                         "mapd_uncorrected": 9.0},
        "test": {k: {"rmse_ms": v, "mapd": 2 * v} for k, v in
                 (("mlp", 1.0), ("linear", 1.5), ("mean", 4.0))}}))
    with open(lat / "predictions.csv", "w") as f:
        f.write("row,split,measured_ms,mlp_ms,linear_ms\n0,train,1,1.1,1.2\n1,test,2,2.1,1.9\n")
    (tmp / "compare.json").write_text(json.dumps({"wins": 4, "of": 5, "seeds": [
        {"seed": s, "evaluations": 60, "evolution": 5.0, "random": 5.1 - 0.2 * (s == 4),
         "evolution_wins": s != 4} for s in range(5)]}))


def test_cli_writes_tables_headline_and_figures(tmp_path):
    _write_inputs(tmp_path)
    args = ["--runs", "hat-s1,mos_layer-e2-s1", "--limits", "q50", "--modes", "inherited,scratch",
            "--search-root", str(tmp_path / "search"), "--retrain-root", str(tmp_path / "retrain"),
            "--latency-dir", str(tmp_path / "lat"), "--compare", str(tmp_path / "compare.json"),
            "--published", json.dumps({"mos": "not read"}), "--task", "ding.en-de",
            "--tables-dir", str(tmp_path / "tables"), "--figures-dir", str(tmp_path / "fig")]
    assert cli.main(args) == 0
    t = tmp_path / "tables"
    for name in ("search", "search_predictor", "search_compare"):
        for ext in ("txt", "md", "csv", "tex"):
            assert (t / f"{name}.{ext}").exists()
    assert sorted(p.name for p in t.glob("search_vs_paper.*")) == ["search_vs_paper.csv",
                                                                   "search_vs_paper.md"]
    pred = list(csv.DictReader((t / "search_predictor.csv").open()))
    assert [(r["model"], r["mapd"]) for r in pred[3:]] == [
        ("re-measurement, drift-corrected (run-to-run spread)", "3.0"),
        ("re-measurement, uncorrected", "9.0")]
    rows = list(csv.DictReader((t / "search.csv").open()))
    assert [r["run"] for r in rows] == ["hat-s1", "mos_layer-e2-s1"]
    assert rows[0]["bleu_retrained"] == "3.5" and rows[1]["within_limit"] == "False"
    head = json.loads((t / "search_headline.json").read_text())
    assert set(head) == {"search/hat-s1/bleu", "search/hat-s1/ms", "search/mos_layer-e2-s1/bleu",
                         "search/mos_layer-e2-s1/ms"}
    assert head["search/hat-s1/bleu"] == 3.5 and head["search/mos_layer-e2-s1/bleu"] == 4.0
    assert all(not isinstance(v, (dict, list)) for v in head.values())
    for stem in ("supernet_frontier", "supernet_predictor"):
        for ext in ("png", "pdf", "csv"):
            assert (tmp_path / "fig" / f"{stem}.{ext}").stat().st_size > 0
    pts = list(csv.DictReader((tmp_path / "fig" / "supernet_frontier.csv").open()))
    assert len(pts) == 6 and {p["kind"] for p in pts} == {"inherited", "retrained", "scratch"}
    assert {p["latency_ms"] for p in pts if p["run"] == "hat-s1"} == {"4.7"}


def test_cli_missing_input_is_one_line(tmp_path, capsys):
    args = ["--runs", "hat-s1", "--limits", "q50", "--search-root", str(tmp_path),
            "--retrain-root", str(tmp_path), "--latency-dir", str(tmp_path),
            "--tables-dir", str(tmp_path / "t"), "--figures-dir", str(tmp_path / "f")]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "q50.json: missing (run the search rules first)" in err and "\n" not in err


@pytest.mark.parametrize("bad, message", [
    ({"hat": [{"task": "x", "hardware": "y", "points": [[1.0]]}]}, "points: must be a list"),
    ({"hat": [{"task": "x", "points": [[1.0, 2.0]]}]}, "supernet.search.published.hat[0].hardware: is missing"),
    ({"mos": [1, 2]}, "supernet.search.published.mos: must be a note"),
])
def test_published_checks(bad, message):
    from moebench.errors import ParamsError

    with pytest.raises(ParamsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_published(bad)
