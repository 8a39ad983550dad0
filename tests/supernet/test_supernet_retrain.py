"""Retraining found subnets: inherited weights start from the supernet's loss, scratch from
a fresh init; resumable; the command line writes BLEU and the final gold latency."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers_supernet_search import SPACE, latency_args, write_corpus
from moebench.cli.supernet import latency as latency_cli
from moebench.cli.supernet import retrain as retrain_cli
from moebench.supernet.data import token_batches
from moebench.supernet.load import load_corpus
from moebench.supernet.model import ModelConfig
from moebench.supernet.retrain import retrain_config, retrain_subnet, start_model
from moebench.supernet.space import Space
from moebench.supernet.train import TrainConfig, valid_loss
from moebench.supernet.train_supernet import (MODEL_FILE, identity, load_supernet, run_dir_for,
                                              train_supernet)

RETRAIN = {"modes": ["inherited", "scratch"], "inherited": {"steps": 6, "lr": 5.0e-4},
           "scratch": {"steps": 6, "lr": 1.0e-3, "warmup": 2}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny corpus and a hat supernet trained for 40 updates."""
    root = tmp_path_factory.mktemp("retrain")
    data, spm = write_corpus(root / "data")
    corpus = load_corpus("ding", data, str(spm))
    space = Space.from_params(SPACE)
    v = corpus.vocab
    mcfg = ModelConfig(vocab_size=len(v), pad=v.pad, eos=v.eos, ffn="mos_layer", dropout=0.0)
    tcfg = TrainConfig(max_updates=40, lr=3e-3, warmup_updates=4, max_tokens=400, eval_every=40)
    ident = identity("mos_layer", 1, space, mcfg, tcfg, {"test": True})
    run_dir = run_dir_for(root / "runs", ident)
    train_supernet(run_dir, ident, corpus, space, mcfg, tcfg, torch.device("cpu"), progress=False)
    marker = root / "marker.json"
    marker.write_text(json.dumps({"run_dir": str(run_dir)}))
    return root, data, spm, corpus, load_supernet(run_dir / MODEL_FILE), marker


def _valid(corpus, cfg):
    return list(token_batches(corpus.splits["valid"], cfg.max_tokens))


def test_inherited_starts_from_the_supernets_loss_and_scratch_does_not(trained, tmp_path):
    root, _, _, corpus, supernet, _ = trained
    arch = supernet.space.sample(np.random.default_rng(3))
    cfg = retrain_config(TrainConfig(max_tokens=400), RETRAIN["inherited"], seed=1)
    assert (cfg.max_updates, cfg.lr, cfg.warmup_updates, cfg.sandwich) == (6, 5e-4, 0, False)
    bleu = lambda m: {"bleu": 1.0}  # noqa: E731
    lat = lambda m: {"latency_ms": 1.0}  # noqa: E731
    res = retrain_subnet(tmp_path / "inh", {"limit": "q50"}, supernet, arch, "inherited",
                         corpus, cfg, bleu, lat)
    want = valid_loss(supernet, arch, _valid(corpus, cfg), 0.1, supernet.cfg.pad)
    assert res["valid_loss_start"] == pytest.approx(want, abs=1e-5)
    assert res["steps"] == 6 and res["records"] == 1 and "bleu_start" in res
    scratch = retrain_subnet(tmp_path / "scr", {"limit": "q50"}, supernet, arch, "scratch",
                             corpus, retrain_config(TrainConfig(max_tokens=400),
                                                    RETRAIN["scratch"], seed=1), bleu, lat)
    assert scratch["valid_loss_start"] > res["valid_loss_start"] + 0.1  # the supernet learned
    assert "bleu_start" not in scratch
    calls = []
    again = retrain_subnet(tmp_path / "inh", {"limit": "q50"}, supernet, arch, "inherited",
                           corpus, cfg, lambda m: calls.append(1), lat)
    assert again == res and not calls  # done: the stored result, nothing recomputed


def test_start_models(trained):
    supernet = trained[4]
    arch = supernet.space.largest()
    a = start_model(supernet, arch, "scratch", seed=5)
    b = start_model(supernet, arch, "scratch", seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    inh = start_model(supernet, arch, "inherited", seed=5)
    assert inh.training and not torch.equal(inh.embed.weight, a.embed.weight)
    with pytest.raises(ValueError, match="unknown retraining mode"):
        start_model(supernet, arch, "distill", 0)


def test_retrain_cli(trained):
    root, data, spm, _, supernet, marker = trained
    lat = root / "lat"
    assert latency_cli.main(latency_args(lat, data, spm)) == 0
    search_dir = root / "search"
    search_dir.mkdir()
    for name, arch, limit in (("q50", supernet.space.smallest(), 1e6),
                              ("1ms", supernet.space.largest(), 1e-3)):
        (search_dir / f"{name}.json").write_text(json.dumps({"arch": arch, "limit_ms": limit}))
    out = root / "retrain" / "inherited.json"
    args = ["--run", "mos_layer-e2-s1", "--modes", "inherited,scratch", "--marker", str(marker),
            "--search-dir", str(search_dir), "--limits", "q50,1ms",
            "--retrain", json.dumps(RETRAIN), "--train", json.dumps({"max_tokens": 400}),
            "--eval", json.dumps({"test_sentences": 10, "max_len_a": 1.2, "max_len_b": 5}),
            "--data-dir", str(data),
            "--spm-model", str(spm), "--device", "cpu", "--state-dir", str(root / "rt"),
            "--out-dir", str(root / "retrain")]
    assert retrain_cli.main(args) == 0
    res = json.loads(out.read_text())
    assert res["variant"] == "mos_layer" and set(res["limits"]) == {"q50", "1ms"}
    q50 = res["limits"]["q50"]
    assert q50["bleu"]["sentences"] == 10 and "tok:13a" in q50["bleu"]["bleu_signature"]
    assert 0 <= q50["bleu_start"]["bleu"] <= 100 and q50["steps"] == 6
    assert q50["limit_ms"] == 1e6 and Path(q50["model"]).exists()
    scratch = json.loads((root / "retrain" / "scratch.json").read_text())
    assert scratch["mode"] == "scratch" and "bleu_start" not in scratch["limits"]["q50"]
    final = root / "final.json"
    assert latency_cli.main(["final", "--retrain", str(out), "--summary",
                             str(lat / "summary.json"), "--out", str(final)]) == 0
    got = json.loads(final.read_text())["mos_layer-e2-s1"]["inherited"]
    assert got["q50"]["within_limit"] and not got["1ms"]["within_limit"]
    assert got["q50"]["latency_ms"] > 0 and got["q50"]["threads"] == 1


def test_retrain_cli_refuses_unknown_mode(trained, capsys):
    root, data, spm, _, _, marker = trained
    args = ["--run", "x", "--modes", "distill", "--marker", str(marker), "--search-dir", "s",
            "--limits", "q50", "--retrain", json.dumps(RETRAIN), "--data-dir", str(data),
            "--spm-model", str(spm), "--state-dir", "st", "--out-dir", "o"]
    assert retrain_cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "--modes 'distill': each must be one of supernet.retrain.modes" in err
