"""The search command line on a tiny (untrained) supernet: per-limit results within their
limits by gold latency, per-generation records, reuse when done, evolution vs random."""
import json

import pytest

from helpers_supernet_search import (SPACE, latency_args, predictor_args, write_corpus,
                                     write_supernet)
from moebench.cli.supernet import latency as latency_cli
from moebench.cli.supernet import predictor as predictor_cli
from moebench.cli.supernet import search as search_cli
from moebench.runs import read_jsonl
from moebench.supernet.space import Space

SEARCH = {"variants": ["hat"], "limits": [{"quantile": 0.5}, {"ms": 1.0e6}], "latency": "predictor",
          "evolution": {"population": 6, "parents": 2, "mutations": 2, "crossovers": 2,
                        "iterations": 3},
          "fitness": {"valid_sentences": 20, "max_tokens": 256}, "gold_check": 10,
          "compare": {"variant": "hat", "limit": {"quantile": 0.5}, "seeds": [0, 1]}, "seed": 0}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    data, spm = write_corpus(root / "data")
    lat = root / "lat"
    assert latency_cli.main(latency_args(lat, data, spm)) == 0
    assert predictor_cli.main(predictor_args(lat)) == 0
    import sentencepiece as sp

    vocab = sp.SentencePieceProcessor(model_file=str(spm)).get_piece_size()
    return root, data, spm, lat, write_supernet(root / "hat.pt", vocab)


def search_args(root, data, spm, lat, supernet, search=SEARCH, compare=True):
    args = ["--run", "hat-s1", "--supernet", str(supernet), "--space", json.dumps(SPACE),
            "--search", json.dumps(search), "--predictor", str(lat / "predictor.pt"),
            "--latency-dataset", str(lat / "dataset.csv"),
            "--latency-summary", str(lat / "summary.json"), "--data-dir", str(data),
            "--spm-model", str(spm), "--device", "cpu", "--state-dir", str(root / "state"),
            "--out-dir", str(root / "out")]
    return args + (["--compare-out", str(root / "compare.json")] if compare else [])


def test_search_then_gold_check(inputs):
    root, data, spm, lat, supernet = inputs
    summary = json.loads((lat / "summary.json").read_text())
    assert summary["protocol"]["src_len"] == round(summary["mean_src_len"])
    assert search_cli.main(search_args(root, data, spm, lat, supernet)) == 0
    space = Space.from_params(SPACE)
    raw = {name: json.loads((root / "out" / f"{name}.json").read_text())
           for name in ("q50", "1e+06ms")}
    for name, res in raw.items():
        assert res["limit"] == name and res["run"] == "hat-s1"
        assert 1 <= len(res["candidates"]) <= SEARCH["gold_check"]
        fits = [c["valid_loss"] for c in res["candidates"]]
        assert fits == sorted(fits) and fits[0] == res["search_best"]["valid_loss"]
        assert all(c["predicted_ms"] <= res["limit_ms"] for c in res["candidates"])
        assert [g["generation"] for g in res["generations"]] == [1, 2, 3]
    (run_dir,) = (root / "state" / "q50").iterdir()
    records = read_jsonl(run_dir / "results.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3] and (run_dir / "done").exists()
    for key in ("args", "hparams", "step", "epoch", "loss", "step_time", "mem_gb",
                "moe_backend", "routing", "best_fitness", "feasible", "evaluations"):
        assert key in records[0]
    cmp = json.loads((root / "compare.json").read_text())
    assert cmp["of"] == 2 and len(cmp["seeds"]) == 2
    for row in cmp["seeds"]:
        assert row["evolution_latency_ms"] <= cmp["limit_ms"] >= row["random_latency_ms"]
    before = (root / "out" / "q50.json").read_text()
    assert search_cli.main(search_args(root, data, spm, lat, supernet, compare=False)) == 0
    assert (root / "out" / "q50.json").read_text() == before  # done: reused, not searched again

    found = [str(root / "out" / f"{n}.json") for n in raw]
    assert latency_cli.main(["check", "--found", *found, "--space", json.dumps(SPACE),
                             "--summary", str(lat / "summary.json"),
                             "--out-root", str(root / "checked")]) == 0
    for name, r in raw.items():
        res = json.loads((root / "checked" / "hat-s1" / f"{name}.json").read_text())
        space.validate(res["arch"])
        assert "candidates" not in res and res["evaluations"] == r["evaluations"]
        # reported within the limit exactly when its gold latency is
        assert res["within_limit"] == (res["gold_ms"] <= res["limit_ms"])
        checked = res["gold_checked"]
        if res["within_limit"]:  # the first candidate that fits, by fitness order
            assert checked[-1]["rank"] == res["gold_rank"]
            assert all(c["gold_ms"] > res["limit_ms"] for c in checked[:-1])
        else:  # every candidate was measured and was over the limit
            assert len(checked) == len(r["candidates"])
            assert all(c["gold_ms"] > res["limit_ms"] for c in checked)
        assert res["arch"] == r["candidates"][res["gold_rank"]]["arch"]
    assert json.loads((root / "checked" / "hat-s1" / "1e+06ms.json").read_text())[
        "gold_rank"] == 0


def test_gold_check_refuses_another_machine(inputs, tmp_path, capsys):
    root, data, spm, lat, supernet = inputs
    summary = json.loads((lat / "summary.json").read_text())
    (tmp_path / "s.json").write_text(json.dumps({**summary, "threads": 8}))
    assert latency_cli.main(["final", "--retrain", "x.json", "--summary",
                             str(tmp_path / "s.json"), "--out", str(tmp_path / "f.json")]) == 2
    assert "measured with threads = 8, this run has 1" in capsys.readouterr().err


def test_search_refuses_another_space(inputs, capsys):
    root, data, spm, lat, supernet = inputs
    args = search_args(root, data, spm, lat, supernet, compare=False)
    args[args.index("--space") + 1] = json.dumps({**SPACE, "encoder_embed_dim": [16]})
    assert search_cli.main(args) == 2
    assert "trained on another design space" in capsys.readouterr().err
