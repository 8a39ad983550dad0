"""The latency-dataset and predictor command lines on a tiny space."""
import csv
import json

import pytest

from moebench.cli.supernet import latency as latency_cli
from moebench.cli.supernet import predictor as predictor_cli

SPACE = {"encoder_embed_dim": [16, 8], "encoder_layer_num": [1],
         "encoder_ffn_embed_dim": [32, 16], "encoder_self_attention_heads": [2],
         "decoder_embed_dim": [16, 8], "decoder_layer_num": [2, 1],
         "decoder_ffn_embed_dim": [32, 16], "decoder_self_attention_heads": [2, 1],
         "decoder_ende_attention_heads": [2], "decoder_arbitrary_ende_attn": [-1], "qkv_dim": 8}
LATENCY = {"device": "cpu", "measure": {"src_len": 4, "decode_steps": 3, "beam": 2, "warmup": 1,
                                        "runs": 3, "threads": 1},
           "dataset": {"size": 20, "repeats": 4, "seed": 0}}
PREDICTOR = {"hidden": 16, "layers": 4, "lr": 1.0e-3, "steps": 40, "eval_every": 10,
             "lat_norm": 1.0}


def test_latency_then_predictor(tmp_path):
    out = tmp_path / "lat"
    args = ["dataset", "--space", json.dumps(SPACE), "--latency", json.dumps(LATENCY),
            "--vocab-size", "30",
            "--work", str(out / "work.csv"), "--out", str(out / "dataset.csv"),
            "--summary", str(out / "summary.json")]
    assert latency_cli.main(args) == 0
    rows = list(csv.DictReader((out / "dataset.csv").open()))
    assert len(rows) == 24 and rows[-1]["pass"] == "1"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == 20 and summary["repeats"] == 4 and summary["threads"] == 1
    assert summary["protocol"]["src_len"] == 4 and summary["vocab_size"] == 30
    assert summary["latency_quantiles_ms"]["0"] <= summary["latency_quantiles_ms"]["1"]
    assert latency_cli.main(args) == 0  # complete: nothing measured again
    assert (out / "work.csv").read_text() == (out / "dataset.csv").read_text()

    pargs = ["--space", json.dumps(SPACE), "--predictor", json.dumps(PREDICTOR),
             "--dataset", str(out / "dataset.csv"), "--model", str(out / "p.pt"),
             "--report", str(out / "report.json"), "--predictions", str(out / "pred.csv")]
    assert predictor_cli.main(pargs) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["rows"] == {"train": 16, "valid": 2, "test": 2}
    assert set(report["test"]) == {"mlp", "linear", "mean"} and report["spread"]["pairs"] == 4
    assert set(report["targets"]) == {"mapd_le_linear", "mapd_within_1.5x_spread",
                                      "mapd_over_spread"}
    preds = list(csv.DictReader((out / "pred.csv").open()))
    assert len(preds) == 20 and sorted({p["split"] for p in preds}) == ["test", "train", "valid"]


@pytest.mark.parametrize("change, message", [
    ({"--latency": "{not json"}, "--latency: not valid JSON"),
    ({"--space": json.dumps({**SPACE, "qkv_dim": 3})}, "2 heads do not divide qkv_dim = 3"),
    ({"--latency": json.dumps({**LATENCY, "measure": {"src_len": "mean"}})}, "--data-dir is needed"),
])
def test_latency_cli_errors_are_one_line(tmp_path, capsys, change, message):
    args = {"--space": json.dumps(SPACE), "--latency": json.dumps(LATENCY), "--vocab-size": "30",
            "--work": str(tmp_path / "w.csv"), "--out": str(tmp_path / "d.csv"),
            "--summary": str(tmp_path / "s.json"), **change}
    assert latency_cli.main(["dataset"] + [x for kv in args.items() for x in kv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moebench.cli.supernet.latency: error: ") and message in err
    assert "\n" not in err


def test_missing_argument_is_one_line(capsys):
    assert predictor_cli.main(["--space", "{}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "error: the following arguments are required" in err and "\n" not in err
    assert latency_cli.main(["measure"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moebench.cli.supernet.latency: error: argument command: invalid choice")
