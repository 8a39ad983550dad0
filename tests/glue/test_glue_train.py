"""The fine-tuning protocol: record format, best epoch, early stop, kill-and-resume,
divergence; on a tiny locally saved BERT."""
from __future__ import annotations

import json
import math

import pytest
import torch

from glue_testlib import write_pair_task
from moebench.glue import train as train_mod
from moebench.glue.driver import TaskInputs
from moebench.glue.model import load_tokenizer
from moebench.glue.params import GlueRun
from moebench.glue.taskdata import read_task
from moebench.glue.train import RunOptions, Tracker, train_run

HP = {"lr": 1e-3, "weight_decay": 0.0, "warmup_ratio": 0.0, "batch_size": 8,
      "eval_batch_size": 8, "epochs": 3, "early_stop": 4, "max_length": 24,
      "freeze_layers": 1, "max_grad_norm": None,
      "moe_layers": [2], "fc2_bias": "divide", "expert_dropout": 0.1, "route_padding": True,
      "num_experts": 4, "mass_max_experts": 8, "mass_tau": 0.5, "mass_p_threshold": 0.01,
      "mass_similarity_threshold": 0.01, "mass_patience": 3, "mass_redundancy_weight": 0.01,
      "mass_expansion_end": 0.5, "mass_warmup_min": 2, "mass_window_min": 3}
TIMING = {"step_time", "mem_gb"}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return write_pair_task(tmp_path_factory.mktemp("task") / "ding_paraphrase")


def _run(tiny_bert, **hp) -> GlueRun:
    return GlueRun("ding_paraphrase", "mass", 0, str(tiny_bert), None, {**HP, **hp},
                   {"source": "test"})


def _inputs(task, tiny_bert) -> TaskInputs:
    return TaskInputs(read_task(task), task, load_tokenizer(str(tiny_bert)))


def _records(run_dir):
    return [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]


def _untimed(records):
    return [{k: v for k, v in r.items() if k not in TIMING and k != "args"} for r in records]


def test_records_of_a_run(task, tiny_bert, tmp_path):
    run = _run(tiny_bert)
    out = train_run(run, _inputs(task, tiny_bert), tmp_path / "r", CPU)
    recs = _records(out)
    assert (out / "done").exists() and not (out / "checkpoint.pt").exists()
    assert json.loads((out / "spec.json").read_text()) == json.loads(json.dumps(run.identity()))
    assert [r["epoch"] for r in recs] == [1, 2, 3] and [r["step"] for r in recs] == [6, 12, 18]
    rec = recs[-1]
    for key in ("args", "hparams", "step", "epoch", "loss", "loss_aux", "step_time", "mem_gb",
                "moe_backend", "routing", "trace", "metric", "val", "val_score", "val_loss",
                "best_score", "best_epoch", "labels", "run_id"):
        assert key in rec, key
    assert rec["metric"] == "acc_f1" and set(rec["val"]) == {"accuracy", "f1"}
    assert rec["val_score"] == pytest.approx((rec["val"]["accuracy"] + rec["val"]["f1"]) / 2)
    assert rec["best_score"] == max(r["val_score"] for r in recs)
    assert rec["args"]["n_steps"] == 18 and rec["args"]["steps_per_epoch"] == 6
    layer = rec["routing"]["hf.bert.encoder.layer.2.intermediate.moe"]
    assert {"load", "dropped", "tokens", "mean_k", "num_experts", "active_experts",
            "expansion_stopped", "events"} <= set(layer)
    trace = rec["trace"]["hf.bert.encoder.layer.2.intermediate.moe"]
    assert trace[-1][0] == 18 and all(len(p) == 3 and p[1] >= 4 for p in trace)
    assert rec["moe_backend"] in ("torch", "native", "native+torch")
    assert train_run(run, _inputs(task, tiny_bert), tmp_path / "r", CPU) == out  # done: skipped
    assert len(_records(out)) == 3


def test_kill_and_resume_gives_the_same_records(task, tiny_bert, tmp_path, monkeypatch):
    run = _run(tiny_bert)
    whole = _records(train_run(run, _inputs(task, tiny_bert), tmp_path / "whole", CPU))
    original = train_mod.train_epoch
    calls = {"n": 0}

    def killed(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")    # killed in epoch 2, after one checkpoint
        return original(*args, **kwargs)
    monkeypatch.setattr(train_mod, "train_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        train_run(run, _inputs(task, tiny_bert), tmp_path / "cut", CPU)
    cut = tmp_path / "cut"
    assert (cut / "checkpoint.pt").exists() and not (cut / "done").exists()
    with open(cut / "results.jsonl", "a") as fh:   # a record written after the checkpoint
        fh.write(json.dumps({**_records(cut)[0], "step": 99}) + "\n")
    monkeypatch.setattr(train_mod, "train_epoch", original)
    resumed = _records(train_run(run, _inputs(task, tiny_bert), cut, CPU))
    assert _untimed(resumed) == _untimed(whole)


def test_divergence_ends_the_run_with_a_record(task, tiny_bert, tmp_path, monkeypatch):
    run = _run(tiny_bert)
    from moebench.glue.methods.dense import Dense

    original = Dense.update

    def update(self, batch):
        out = original(self, batch)
        return {**out, "loss": float("nan")} if self.step == 9 else out
    monkeypatch.setattr(Dense, "update", update)
    out = train_run(run, _inputs(task, tiny_bert), tmp_path / "d", CPU)
    recs = _records(out)
    assert (out / "done").exists() and len(recs) == 2
    assert recs[-1]["diverged"] is True and recs[-1]["step"] == 9 and math.isnan(recs[-1]["loss"])


def test_best_epoch_and_early_stop():
    t = Tracker()
    for epoch, score in enumerate([0.0, 0.5, 0.4, 0.5, 0.3], 1):
        t.update(epoch, score)
    assert (t.best, t.best_epoch, t.bad) == (0.5, 2, 3)     # ties do not improve; starts at 0


def test_early_stop_stops_training(task, tiny_bert, tmp_path, monkeypatch):
    run = _run(tiny_bert, epochs=5, early_stop=2)
    monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: {
        "val": {"accuracy": 0.5, "f1": 0.5}, "val_score": 0.5, "val_loss": 1.0})
    recs = _records(train_run(run, _inputs(task, tiny_bert), tmp_path / "e", CPU,
                              RunOptions(trace_points=2)))
    assert [r["epoch"] for r in recs] == [1, 2, 3] and recs[-1]["best_epoch"] == 1

