"""Records loading (ours and DomainBed's), tables against frozen expected files, and the CLIs.

The expected files in ``tests/data/expected_tables`` were generated once from
``tests/data/mini_records.jsonl`` (see ``tests/data/make_fixtures.py``), checked by hand, and
frozen. After a deliberate format change regenerate them with
``MOEBENCH_UPDATE_EXPECTED=1 .venv/bin/python -m pytest tests/test_tables.py`` and re-read them.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from moebench.errors import DataError
from moebench.cli.dg import collect as collect_cli
from moebench.cli.dg import tables as tables_cli
from moebench.dg.reporting import render
from moebench.dg.reporting.records import (
    RecordError, load_results_file, load_runs, load_sweep, normalise_record, read_jsonl,
)
from moebench.dg.reporting.routing import routing_csv, routing_markdown, routing_rows
from moebench.dg.reporting.tables import Cell, build_report, order_algorithms
from moebench.dg.reporting.write import write_report

DATA = Path(__file__).parent / "data"
MINI = DATA / "mini_records.jsonl"
EXPECTED = DATA / "expected_tables"
SWEEP = DATA / "domainbed_sweep"
TRUNCATED_RUN = SWEEP / "814c02970a1258057bd05c0c9da80fd6"


@pytest.fixture(scope="module")
def mini_report():
    return build_report(load_results_file(MINI))


def _row(table, algorithm):
    return next(r for r in table.rows if r.algorithm == algorithm)


# --- tables ---------------------------------------------------------------------------------

def test_tables_match_frozen_expected_files(tmp_path):
    out = tmp_path / "tables"
    assert tables_cli.main(["--records", str(MINI), "--out", str(out), "--quiet"]) == 0
    if os.environ.get("MOEBENCH_UPDATE_EXPECTED"):
        shutil.rmtree(EXPECTED, ignore_errors=True)
        shutil.copytree(out, EXPECTED)
    produced = sorted(p.name for p in out.iterdir())
    assert produced == sorted(p.name for p in EXPECTED.iterdir())  # also: no temp files left
    for name in produced:
        assert (out / name).read_text() == (EXPECTED / name).read_text(), name


def test_hand_checked_cells(mini_report):
    """Values worked out by hand from the accuracy rule in make_fixtures.py."""
    iid, lodo, oracle = mini_report.methods
    colored = iid.datasets[0]
    assert colored.key == "colored_digits" and colored.columns == ("+90%", "+80%", "-90%")
    gmoe = _row(colored, "gmoe")  # trial 0 picks step 10 (0.52), trial 1 over-fits: step 0 (0.43)
    assert gmoe.cells[0].values == pytest.approx((0.52, 0.43))
    assert render.format_cell(gmoe.cells[0]) == "47.5 +/- 3.2"
    assert _row(oracle.datasets[0], "gmoe").cells[0].values == pytest.approx((0.52, 0.53))
    lodo_gmoe = _row(lodo.datasets[0], "gmoe")  # trial 1 lacks pair {1,2}: envs 1, 2 from trial 0
    assert [len(c.values) for c in lodo_gmoe.cells] == [2, 1, 1]
    assert lodo_gmoe.avg == pytest.approx((52.5 + 57.0 + 62.0) / 3)
    assert _row(lodo.averages, "gmoe").cells[0].values == pytest.approx((0.57, 0.53))
    assert _row(iid.averages, "gmoe").avg is None  # gmoe never ran rotated_digits
    assert _row(iid.averages, "erm").avg == pytest.approx((55.5 + 65.5) / 2)


def test_cell_is_mean_and_standard_error_in_percent():
    cell = Cell((0.52, 0.43))
    assert cell.mean == pytest.approx(47.5)
    assert cell.err == pytest.approx(100 * 0.045 / 2 ** 0.5)  # population std / sqrt(n)
    assert render.format_cell(cell, "latex") == "47.5 $\\pm$ 3.2"
    assert render.format_cell(Cell(())) == "X" and Cell(()).mean is None


def test_algorithm_order_preferred_then_alphabetical():
    names = ["zeta", "soft_moe", "ERM", "alpha", "gmoe"]
    assert order_algorithms(names) == ["ERM", "gmoe", "soft_moe", "alpha", "zeta"]
    assert order_algorithms(names, ["zeta"]) == ["zeta", "ERM", "alpha", "gmoe", "soft_moe"]


def test_algorithm_order_flag(tmp_path):
    out = tmp_path / "t"
    assert tables_cli.main(["--records", str(MINI), "--out", str(out), "--quiet",
                            "--algorithm-order", "gmoe", "erm"]) == 0
    lines = (out / "iid_colored_digits.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["gmoe", "erm"]


def test_latex_escapes_labels(mini_report):
    tex = render.render_latex(mini_report)
    assert "\\subsubsection{colored\\_digits}" in tex and "\\textbf{+90\\%}" in tex
    assert "_digits" not in tex.replace("\\_digits", "")


def test_routing_table_shows_active_experts_only_when_present(mini_report):
    rows = routing_rows(mini_report)
    assert [r.layer for r in rows[:2]] == ["network.blocks.8.mlp", "network.blocks.10.mlp"]
    assert rows[0].dropped == pytest.approx(12.5) and rows[0].experts == 6
    assert "Active experts" not in routing_csv(rows)
    record = dict(load_results_file(MINI)[0])
    record["routing"] = {"blocks.8.mlp": {"load": [0.5, 0.5, 0, 0], "dropped": 0.0,
                                          "tokens": 8, "active_experts": 2}}
    report = build_report([record])
    text = routing_csv(routing_rows(report))
    assert text.splitlines()[0].split(",")[5] == "Active experts"
    assert text.splitlines()[1].split(",")[4:7] == ["4", "2", "0.0"]
    assert "No MoE routing" in routing_markdown([])


# --- records loading ------------------------------------------------------------------------

def test_reads_domainbed_sweep_with_truncated_run(caplog):
    with caplog.at_level(logging.WARNING):
        records = load_sweep(SWEEP)
    assert len(records) == 7 and "truncated last line" in caplog.text
    assert {r["dataset"] for r in records} == {"PACS"}
    assert records[0]["environments"] == ["A", "C", "P", "S"] and records[0]["routing"] == {}
    assert {tuple(r["test_envs"]) for r in records} == {(0,), (1,), (0, 1), (2,)}
    assert len(load_sweep(SWEEP, require_done=True)) == 6


def test_domainbed_sweep_tables(tmp_path):
    out = tmp_path / "t"
    assert tables_cli.main(["--input_dir", str(SWEEP), "--out", str(out), "--quiet"]) == 0
    text = (out / "results.txt").read_text()
    assert text.startswith("Total records: 7\n")
    assert "-------- Dataset: PACS, model selection method: training-domain validation set" in text
    summary = json.loads((out / "summary.json").read_text())
    cell = summary["methods"]["iid"]["datasets"]["PACS"]["ERM"]["cells"]["A"]
    assert cell == {"mean": 50.0, "err": 0.0, "n": 1}  # env0 in-acc at step 300 = 0.4 + 0.1


def test_metadata_comes_from_records_never_paths(tmp_path):
    run = tmp_path / "runs" / "rotated_digits" / "gmoe" / "abc"
    shutil.copytree(SWEEP / "250e70513011ed06076b61e7bf8620fa", run)
    records = load_sweep(tmp_path / "runs")  # our nested layout, found recursively
    assert records and all((r["dataset"], r["algorithm"]) == ("PACS", "ERM") for r in records)


def test_truncated_last_line_skipped_but_bad_middle_line_fails(tmp_path, caplog):
    good = json.dumps({"a": 1})
    path = tmp_path / "results.jsonl"
    path.write_text(f"{good}\n{good}\n{good[:4]}")
    with caplog.at_level(logging.WARNING):
        assert len(read_jsonl(path)) == 2
    assert "truncated" in caplog.text
    path.write_text(f"{good}\n{{broken\n{good}\n")
    with pytest.raises(RecordError, match=r"results.jsonl:2: invalid JSON"):
        read_jsonl(path)


def test_normalise_domainbed_and_ours_agree():
    raw = json.loads((TRUNCATED_RUN / "results.jsonl").read_text().splitlines()[0])
    rec = normalise_record(raw)
    assert (rec["dataset"], rec["algorithm"], rec["test_envs"]) == ("PACS", "ERM", [2])
    assert (rec["trial_seed"], rec["hparams_seed"], rec["step"]) == (0, 0, 0)
    assert normalise_record(rec) == rec  # idempotent
    ours = load_results_file(MINI)[0]
    assert ours["environments"] == ["+90%", "+80%", "-90%"] and ours["routing"]


def test_normalise_errors_and_label_fallbacks():
    raw = {"args": {"dataset": "Mystery", "algorithm": "ERM", "test_envs": [0], "trial_seed": 0,
                    "hparams_seed": 0}, "step": 0, "env0_in_acc": 0.5, "env0_out_acc": 0.5,
           "env1_in_acc": 0.5, "env1_out_acc": 0.5}
    assert normalise_record(raw)["environments"] == ["env0", "env1"]
    for key in ("trial_seed", "dataset"):
        bad = {**raw, "args": {k: v for k, v in raw["args"].items() if k != key}}
        with pytest.raises(RecordError, match=f"no '{key}'"):
            normalise_record(bad, "f.jsonl:3")
    with pytest.raises(RecordError, match="'environments' has 3 labels"):
        normalise_record({**raw, "environments": ["a", "b", "c"]})


def test_load_runs_errors(tmp_path):
    with pytest.raises(DataError, match="run directory not found"):
        load_runs([tmp_path / "missing"])
    with pytest.raises(DataError, match="has no results.jsonl"):
        load_runs([tmp_path])


# --- CLIs -----------------------------------------------------------------------------------

def test_collect_then_tables_equals_direct(tmp_path):
    runs_file = tmp_path / "runs.txt"
    runs = sorted(p for p in SWEEP.iterdir())
    runs_file.write_text("# finished runs\n" + "".join(f"{p}\n" for p in runs))
    out = tmp_path / "records.jsonl"
    assert collect_cli.main(["--runs-file", str(runs_file), "--out", str(out), "--require-done"]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line)["environments"] for line in lines)
    assert tables_cli.main(["--records", str(out), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    nested = SWEEP / "250e70513011ed06076b61e7bf8620fa"  # also under SWEEP: read once
    assert collect_cli.main(["--input_dir", str(SWEEP), str(nested), "--out", str(out),
                             "--require-done"]) == 0
    assert len(out.read_text().splitlines()) == 6
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_collect_from_sweep_plan(tmp_path):
    done = [str(p) for p in sorted(SWEEP.iterdir()) if (p / "done").exists()]
    plan = {"runs_root": str(SWEEP), "data_paths": {},
            "batches": {"PACS/ERM/b001": [{"run_dir": done[2]}],
                        "PACS/ERM/b000": [{"run_dir": d} for d in done[:2]]}}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    out = tmp_path / "records.jsonl"
    assert collect_cli.main(["--plan", str(tmp_path / "plan.json"), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 6


@pytest.mark.parametrize("argv,message", [
    (["collect", "--plan", "{tmp}/plan.json"], "sweep plan not found"),
    (["collect", "--runs-file", "{tmp}/nope.txt"], "runs file not found"),
    (["collect", "--input_dir", "{tmp}/empty"], "no records found"),
    (["collect", "--input_dir", "{tmp}/absent"], "input directory not found"),
    (["tables", "--records", "{tmp}/nope.jsonl"], "records file not found"),
    (["tables", "--records", "{tmp}/empty/records.jsonl"], "no records in"),
])
def test_cli_bad_input_gives_one_line_error(tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "records.jsonl").write_text("")
    cli, *args = [a.format(tmp=tmp_path) for a in argv]
    main = collect_cli.main if cli == "collect" else tables_cli.main
    out_flag = str(tmp_path / ("out.jsonl" if cli == "collect" else "out"))
    assert main([*args, "--out", out_flag]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith(f"moebench.cli.dg.{cli}: error:")
    assert not Path(out_flag).exists()


def test_write_report_is_atomic_and_complete(tmp_path, mini_report):
    written = write_report(mini_report, tmp_path / "t", routing=False)
    names = {p.name for p in (tmp_path / "t").iterdir()}
    assert names == {p.name for p in written} and "routing.csv" not in names
    assert {"results.txt", "results.tex", "summary.json", "iid_averages.md", "oracle_rotated_digits.csv"} <= names
