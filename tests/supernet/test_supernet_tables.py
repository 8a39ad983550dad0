"""The supernet table, headline and figure from evaluation JSONs (exact formats)."""
import json

from moebench.cli.supernet import tables as cli
from moebench.supernet.tables import load_evals, table_rows, write_tables


def _eval(path, variant, experts, seed_shift=0.0):
    archs = {}
    for i, name in enumerate(["largest", "smallest", "sampled_0"]):
        r = {"bleu": 1.0 + i + seed_shift, "chrf": 10.0 + i, "bleu_signature": "nrefs:1|tok:13a"}
        archs[name] = {"valid_loss": 5.0 + i / 10 + seed_shift, "params": 1000 - 100 * i,
                       "beam": r, "greedy": {**r, "bleu": 0.5 + i}}
    path.write_text(json.dumps({"variant": variant, "num_experts": experts, "archs": archs}))
    return path


def test_table_rows_group_variants_per_architecture_and_average_seeds(tmp_path):
    files = [_eval(tmp_path / "a.json", "mos_neuron", 2), _eval(tmp_path / "b.json", "hat", 1),
             _eval(tmp_path / "c.json", "mos_layer", 2),
             _eval(tmp_path / "d.json", "mos_layer", 2, seed_shift=1.0)]
    ev = load_evals(files)
    assert ev["labels"] == ["hat", "mos_layer E=2", "mos_neuron E=2"]
    header, rows = table_rows(ev)
    assert header == ["architecture", "params", "supernet", "seeds", "valid loss", "BLEU", "chrF",
                      "BLEU greedy"]
    assert rows[0] == ["largest", "1000", "hat", "1", "5.0000", "1.00", "10.00", "0.50"]
    assert rows[1] == ["largest", "1000", "mos_layer E=2", "2", "5.5000 +- 0.7071",
                       "1.50 +- 0.71", "10.00 +- 0.00", "0.50 +- 0.00"]
    assert [r[0] for r in rows] == ["largest"] * 3 + ["smallest"] * 3 + ["sampled_0"] * 3
    head = write_tables(ev, tmp_path / "t")
    assert head == {"supernet/hat/loss": 5.0, "supernet/hat/bleu": 1.0,
                    "supernet/mos_layer_e2/loss": 5.5, "supernet/mos_layer_e2/bleu": 1.5,
                    "supernet/mos_neuron_e2/loss": 5.0, "supernet/mos_neuron_e2/bleu": 1.0}
    md = (tmp_path / "t" / "supernet.md").read_text().splitlines()
    assert md[2] == "| architecture | params | supernet | seeds | valid loss | BLEU | chrF | BLEU greedy |"
    assert md[4] == "| largest | 1000 | hat | 1 | 5.0000 | 1.00 | 10.00 | 0.50 |"
    tex = (tmp_path / "t" / "supernet.tex").read_text()
    assert r"mos\_layer E=2 & 2 & 5.5000 $\pm$ 0.7071" in tex and r"\bottomrule" in tex
    csv_lines = (tmp_path / "t" / "supernet.csv").read_text().splitlines()
    assert csv_lines[1] == "largest,1000,hat,1,5.0000,1.00,10.00,0.50" and len(csv_lines) == 10
    txt = (tmp_path / "t" / "supernet.txt").read_text()
    assert "sacrebleu nrefs:1|tok:13a" in txt.splitlines()[0]


def test_cli_writes_tables_and_figure_and_reports_bad_input(tmp_path, capsys):
    f = _eval(tmp_path / "a.json", "hat", 1)
    assert cli.main(["--evals", str(f), "--out-dir", str(tmp_path / "t"), "--figure-prefix",
                     str(tmp_path / "fig" / "supernet_")]) == 0
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == [
        "supernet_subnets.csv", "supernet_subnets.pdf", "supernet_subnets.png"]
    assert "largest" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{")
    assert cli.main(["--evals", str(tmp_path / "bad.json"), "--out-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("moebench.cli.supernet.tables: error: ")
    assert "bad.json: not an evaluation JSON" in err[0]
