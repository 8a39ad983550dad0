"""Ours vs paper: params/dg/paper_numbers.yaml, values and differences on hand-made records.

Hand-made records (one checkpoint per run, single test envs, trial seeds 0 and 1): test-env
accuracy ``0.80 + 0.01 t + 0.02 trial`` (+0.05 for gmoe), so the iid average over the 4
PACS test envs is 81.5 (trial 0) and 83.5 (trial 1): 82.5 ± 0.7 for erm, 87.5 ± 0.7 for gmoe.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from moebench.cli.dg import compare as compare_cli
from moebench.dg.reporting.paper import (
    AVERAGE, PaperNumbersError, compare, load_paper_numbers, parse_paper_numbers,
)
from moebench.dg.reporting.paper_render import comparison_latex, comparison_markdown

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "params" / "dg" / "paper_numbers.yaml"
DEIT = "deit_small_patch16_224"
PACS_ENVS = ["A", "C", "P", "S"]


def record(dataset: str, envs: list[str], algorithm: str, test_env: int, trial: int,
           hparams: dict, **extra) -> dict:
    acc = 0.80 + 0.01 * test_env + 0.02 * trial + (0.05 if algorithm == "gmoe" else 0.0)
    rec = {"args": {"dataset": dataset, "algorithm": algorithm, "test_envs": [test_env],
                    "trial_seed": trial, "hparams_seed": 0, "steps": 101},
           "hparams": hparams, "step": 100, "environments": envs, **extra}
    for i in range(len(envs)):
        rec[f"env{i}_in_acc"] = acc if i == test_env else 0.95
        rec[f"env{i}_out_acc"] = acc - 0.01 if i == test_env else 0.9
    return rec


def records(dataset="pacs", envs=PACS_ENVS, algorithms=("erm", "gmoe"), backbone=DEIT,
            num_experts=6, **extra) -> list[dict]:
    out = []
    for algorithm in algorithms:
        hp = {"backbone": backbone, **({"num_experts": num_experts} if algorithm == "gmoe" else {})}
        for trial in (0, 1):
            for t in range(len(envs)):
                out.append(record(dataset, envs, algorithm, t, trial, hp, **extra))
    return out


def normalised(raw: list[dict]) -> list[dict]:
    from moebench.dg.reporting.records import normalise_record
    return [normalise_record(r) for r in raw]


HAND = {
    "dataset_names": {"PACS": "pacs"},
    "tables": {
        "t1": {"source": {"paper": "P", "table": "Tab 1", "commit": "abc"}, "selection": "iid",
               "match": {"backbone": DEIT}, "average_over": ["pacs", "vlcs"],
               "rows": [{"algorithm": "erm", "label": "ERM-ViT",
                         "values": {"pacs": [86.2, 0.1], "vlcs": 79.7, "average": 80.0},
                         "domains": {"pacs": {"A": 84.0, "S": 70.0}}},
                        {"algorithm": "gmoe", "label": "GMoE K=4", "match": {"num_experts": 4},
                         "values": {"pacs": 88.0}},
                        {"algorithm": "gmoe", "label": "GMoE K=6", "match": {"num_experts": 6},
                         "values": {"pacs": [88.1, 0.1]}}]},
        "t2": {"source": {"paper": "Q", "table": "Tab 2", "commit": "def"}, "selection": "lodo",
               "rows": [{"algorithm": "erm", "label": "ERM", "values": {"pacs": 83.0}}]},
    },
}


def rows_by(rows, **key):
    return [r for r in rows if all(getattr(r, k) == v for k, v in key.items())]


def test_paper_numbers_file_loads_and_every_entry_has_a_source():
    numbers, names = load_paper_numbers(PAPER)
    assert len(numbers) > 60
    for n in numbers:
        assert all(str(n.source[k]).strip() for k in ("paper", "table", "commit")), n
        assert n.selection in {"iid", "lodo", "oracle"}
    assert names["PACS"] == "pacs" and names["TerraIncognita"] == "terra_incognita"
    by = {(n.table, n.dataset, n.domain, n.label): (n.mean, n.err) for n in numbers}
    assert by[("gmoe_iclr2023_table1", "pacs", "avg", "GMoE-S/16")] == (88.1, 0.1)
    assert by[("gmoe_iclr2023_table1", "terra_incognita", "avg", "ERM (ViT-S/16)")] == (42.0, 0.8)
    assert by[("sfmoe_2022_lodo", "domain_net", "avg", "SF-MoE")] == (47.8, 0.2)
    assert by[("mass_aaai2026_domainbed", AVERAGE, "avg", "MASS")] == (72.8, None)
    assert by[("domainbed_erm_oracle", "terra_incognita", "avg", "ERM (ResNet-50)")] == (53.0, 0.3)
    assert by[("domainbed_erm_iid", "colored_mnist", "-90%", "ERM (ResNet-50)")] == (10.0, None)
    # each published per-dataset average is the mean of its test-domain numbers (to rounding)
    iid = [n for n in numbers if n.table == "domainbed_erm_iid"]
    for dataset in ("pacs", "vlcs", "office_home", "terra_incognita", "domain_net"):
        per_env = [n.mean for n in iid if n.dataset == dataset and n.domain != "avg"]
        avg = next(n.mean for n in iid if n.dataset == dataset and n.domain == "avg")
        assert sum(per_env) / len(per_env) == pytest.approx(avg, abs=0.15)
    # MASS / DomainBed cross-dataset averages agree with their per-dataset numbers
    for n in numbers:
        if n.dataset == AVERAGE:
            parts = [m.mean for m in numbers if (m.table, m.label, m.domain) == (n.table, n.label, "avg")
                     and m.dataset in n.average_over]
            assert len(parts) == len(n.average_over)
            assert sum(parts) / len(parts) == pytest.approx(n.mean, abs=0.06)


def test_paper_dataset_keys_are_ours_with_matching_env_labels():
    import moebench.dg.datasets  # noqa: F401
    from moebench.registry import DATASETS

    numbers, names = load_paper_numbers(PAPER)
    for n in numbers:
        if n.dataset in DATASETS.names() and n.domain != "avg":
            assert n.domain in DATASETS.get(n.dataset).ENVIRONMENTS, n
    assert {n.dataset for n in numbers} - {AVERAGE} == set(names.values())


def test_values_and_diffs_on_hand_made_records():
    numbers, names = parse_paper_numbers(HAND)
    rows = compare(normalised(records()), numbers, dataset_names=names)
    erm = rows_by(rows, dataset="pacs", domain="avg", selection="iid", algorithm="erm")[0]
    assert (erm.ours_mean, erm.ours.err) == (pytest.approx(82.5), pytest.approx(0.7071, abs=1e-4))
    assert erm.diff == pytest.approx(82.5 - 86.2) and len(erm.ours.values) == 2
    assert erm.steps == 101 and erm.reduced == ""
    k6, = [r for r in rows_by(rows, algorithm="gmoe") if r.paper.label == "GMoE K=6"]
    k4, = [r for r in rows_by(rows, algorithm="gmoe") if r.paper.label == "GMoE K=4"]
    assert k6.ours_mean == pytest.approx(87.5) and k6.diff == pytest.approx(87.5 - 88.1)
    assert k4.ours_mean is None and k4.diff is None  # our gmoe has 6 experts: no match
    a, s = rows_by(rows, domain="A")[0], rows_by(rows, domain="S")[0]
    assert a.ours_mean == pytest.approx(81.0) and a.diff == pytest.approx(81.0 - 84.0)
    assert s.ours_mean == pytest.approx(84.0) and s.diff == pytest.approx(14.0)
    vlcs, = rows_by(rows, dataset="vlcs")  # no vlcs runs: ours blank
    assert vlcs.ours_mean is None and vlcs.paper.mean == 79.7
    avg, = rows_by(rows, dataset=AVERAGE)  # needs pacs and vlcs: blank
    assert avg.ours_mean is None
    lodo, = rows_by(rows, selection="lodo")  # singles only: LODO has no result
    assert lodo.ours_mean is None
    assert [r.domain for r in rows_by(rows, dataset="pacs")][:2] == ["A", "S"]  # domains first


def test_cross_dataset_average_and_backbone_filter():
    numbers, names = parse_paper_numbers(HAND)
    both = normalised(records() + records("vlcs", ["C", "L", "S", "V"], algorithms=("erm",)))
    avg, = rows_by(compare(both, numbers, dataset_names=names), dataset=AVERAGE)
    assert avg.ours_mean == pytest.approx((82.5 + 82.5) / 2) and avg.diff == pytest.approx(2.5)
    other = normalised(records(backbone="vit_digits"))
    rows = compare(other, numbers, dataset_names=names)
    assert all(r.ours_mean is None for r in rows if r.paper and r.paper.table == "t1")


def test_domainbed_records_renamed_and_na_rows():
    numbers, names = parse_paper_numbers(HAND)
    raw = records("PACS", algorithms=("erm",)) + records("colored_digits", ["+90%", "+80%", "-90%"])
    rows = compare(normalised(raw), numbers, dataset_names=names, selections=["iid"])
    assert rows_by(rows, dataset="pacs", domain="avg", algorithm="erm")[0].ours_mean == pytest.approx(82.5)
    na = rows_by(rows, dataset="colored_digits")
    assert [(r.algorithm, r.paper) for r in na] == [("erm", None), ("gmoe", None)]
    assert na[0].ours_mean == pytest.approx(82.0)  # trials: (0.80 + 0.81 + 0.82) / 3, then + 0.02
    assert all(r.selection == "iid" for r in rows)
    only = compare(normalised(raw), numbers, dataset_names=names, only_ours=True)
    assert only and all(r.ours_mean is not None for r in only)


def test_reduced_runs_are_marked(tmp_path, capsys):
    numbers, names = parse_paper_numbers(HAND)
    rows = compare(normalised(records(reduced=True)), numbers, dataset_names=names)
    marked = [r for r in rows if r.ours_mean is not None]
    assert marked and all(r.reduced == "reduced" for r in marked)
    assert all(r.reduced == "" for r in rows if r.ours_mean is None)
    md = comparison_markdown(rows)
    assert "| pacs | Avg | iid | erm | 82.5 ± 0.7 † | 86.2 ± 0.1 | ERM-ViT | -3.7 | P |" in md
    assert "† reduced run (reduced)" in md
    tex = comparison_latex(rows)
    assert "82.5 $\\pm$ 0.7 $^\\dagger$ & 86.2 $\\pm$ 0.1" in tex and "\\bottomrule" in tex
    # CLI: a label for every row of ours
    data = tmp_path / "records.jsonl"
    import json
    data.write_text("".join(json.dumps(r) + "\n" for r in records()))
    paper = tmp_path / "paper.yaml"
    paper.write_text(yaml.safe_dump(HAND))
    out = tmp_path / "out"
    assert compare_cli.main(["--records", str(data), "--paper", str(paper), "--out", str(out),
                             "--reduced-label", "PACS only, 100 steps", "--quiet"]) == 0
    table = pd.read_csv(out / "ours_vs_paper.csv", keep_default_na=False)
    assert sorted(p.name for p in out.iterdir()) == ["ours_vs_paper.csv", "ours_vs_paper.md", "ours_vs_paper.tex"]
    filled = table[table.ours_mean != ""]
    assert len(filled) and (filled.reduced == "PACS only, 100 steps").all()
    row = table[(table.paper_row == "ERM-ViT") & (table.test_domain == "Avg")].iloc[0]
    assert (row.ours, row.paper, row["diff"], row.source_commit) == ("82.5 ± 0.7", "86.2 ± 0.1", "-3.7", "abc")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["tables"]["t1"]["source"].pop("commit"), "tables.t1.source: missing 'commit'"),
    (lambda d: d["tables"]["t2"].update(selection="best"), "tables.t2.selection: 'best'"),
    (lambda d: d["tables"]["t2"]["rows"][0]["values"].update(pacs="high"), "rows[0].values.pacs"),
    (lambda d: d["tables"]["t2"]["rows"][0]["values"].update(average=1.0), "needs 'average_over'"),
])
def test_bad_paper_numbers(mutate, message):
    import copy
    data = copy.deepcopy(HAND)
    mutate(data)
    with pytest.raises(PaperNumbersError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_paper_numbers(data)


def test_cli_one_line_errors(tmp_path, capsys):
    missing = tmp_path / "none.yaml"
    assert compare_cli.main(["--records", "x.jsonl", "--paper", str(missing), "--out", str(tmp_path)]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("tables: {t: {selection: iid, rows: []}}\n")
    assert compare_cli.main(["--records", "x.jsonl", "--paper", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"moebench.cli.dg.compare: error: paper numbers file not found: {missing}",
                   f"moebench.cli.dg.compare: error: {bad}: tables.t: no 'source' mapping"]
