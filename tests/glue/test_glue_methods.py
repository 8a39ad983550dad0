"""The GLUE methods: declarations, MinTau on BERT, MASS expansion with the gradient split,
the GMoE balancing loss, the optimizer schedule."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moebench.glue.methods.dense import linear_schedule
from moebench.glue.model import load_classifier
from moebench.glue.params import declarations, hparam_tables
from moebench.glue.surgery import moe_ffns
from moebench.glue.study import STUDY_HPARAMS

STUDY = {"lr": 1e-3, "weight_decay": 0.0, "warmup_ratio": 0.0, "batch_size": 4,
         "eval_batch_size": 4, "epochs": 1, "early_stop": 4, "max_length": 16,
         "freeze_layers": 0, "max_grad_norm": None}
SURGERY = {"moe_layers": [1], "fc2_bias": "divide", "expert_dropout": 0.1,
           "route_padding": True}
MASS = {**STUDY, **SURGERY, "num_experts": 4, "mass_max_experts": 8, "mass_tau": 0.5,
        "mass_p_threshold": 0.01, "mass_similarity_threshold": 0.5, "mass_patience": 3,
        "mass_redundancy_weight": 0.01, "mass_expansion_end": 1.0, "mass_warmup_min": 3,
        "mass_window_min": 4}
GMOE = {**STUDY, **SURGERY, "num_experts": 4, "top_k": 1, "capacity_factor": 1.5,
        "gate_noise": 1.0, "aux_weight": 0.01}


def _method(name: str, tiny_bert, hparams, n_steps: int = 100):
    cls = declarations()[name].load()
    torch.manual_seed(0)
    return cls(load_classifier(str(tiny_bert), 2), hparams, n_steps).to("cpu")


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 40, (6, 9), generator=g)
    mask = torch.ones(6, 9, dtype=torch.long)
    mask[2, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask,
            "labels": torch.tensor([0, 1, 0, 1, 1, 0])}


def test_declarations_read_without_import_and_share_the_surgery_hparams():
    decls = declarations()
    assert sorted(decls) == ["dense", "gmoe", "mass"]
    assert {d.study for d in decls.values()} == {"glue"}
    tables = hparam_tables(decls)
    study = {h.name for h in STUDY_HPARAMS}
    assert set(tables["dense"]) == study
    assert set(tables["gmoe"]) == study | set(GMOE) - set(STUDY)
    assert set(tables["mass"]) == set(MASS)
    assert tables["mass"]["moe_layers"] is tables["gmoe"]["moe_layers"]   # declared once
    assert tables["gmoe"]["moe_layers"].problem([1, 1]) == "[1, 1] has repeated elements"
    assert tables["mass"]["num_experts"].problem(9, {"mass_max_experts": 8}) == \
        "9 is above the maximum mass_max_experts = 8"


def test_mintau_on_bert_picks_the_minimal_set(tiny_bert):
    method = _method("mass", tiny_bert, MASS)
    ffn = moe_ffns(method.model)[0]
    seen = {}
    ffn.register_forward_pre_hook(lambda mod, args: seen.update(x=args[0].detach()))
    with torch.no_grad():
        ffn.moe.router.wg.weight.mul_(3)            # a spread of set sizes, not all k = 1
    method.model.train()
    method.model(_batch())
    x = seen["x"].reshape(-1, 32)
    with torch.no_grad():
        res = ffn.moe.router(x)
    probs = torch.softmax(res.logits[:, :4], dim=1).numpy()   # the 4 active slots
    for t in range(x.shape[0]):
        order = np.argsort(-probs[t])
        k = int(np.argmax(np.cumsum(probs[t][order]) >= 0.5)) + 1
        chosen = set(res.indices[t][res.valid[t]].tolist())
        assert chosen == set(order[:k].tolist()), t
        torch.testing.assert_close(res.weights[t][res.valid[t]].sum(), torch.tensor(1.0))
    ks = res.valid.sum(1).float()
    assert 1 <= ks.min() < ks.max() <= 4
    stats = method.routing_stats(reset=True)
    layer = stats["hf.bert.encoder.layer.1.intermediate.moe"]
    assert layer["num_experts"] == 4 and layer["active_experts"] == 4
    assert math.isclose(layer["mean_k"], float(ks.mean()), rel_tol=1e-6)


def test_expansion_fires_on_synthetic_drift_and_splits_the_gradient(tiny_bert):
    method = _method("mass", tiny_bert, MASS, n_steps=100)
    assert (method.drift.warmup, method.drift.window) == (5, 9)     # max(3, 5), max(4, 9)
    experts = moe_ffns(method.model)[0].moe.experts
    w = experts.fc1_weight.detach()
    g = torch.Generator().manual_seed(1)
    base = torch.randn(w.shape, generator=g)
    # orthogonal to each expert's weights, growing steadily on expert 2 only: a drift
    ortho = base - (base * w).sum((1, 2), keepdim=True) / (w * w).sum((1, 2), keepdim=True) * w
    batch = _batch()
    fired = None
    for step in range(30):
        method.step = step
        scale = torch.ones(8, 1, 1)
        scale[2] = 1.0 + 0.3 * step
        experts.fc1_weight.grad = ortho * scale
        before = experts.fc1_weight.grad.clone()
        method.after_backward(batch, torch.tensor(0.7))
        events = method.mass.expanders["hf.bert.encoder.layer.1.intermediate.moe"].events
        if events:
            fired = step
            break
    assert fired is not None and fired >= method.drift.window - 1
    event = events[0]
    assert (event["kind"], event["parent"], event["slot"]) == ("expand", 2, 4)
    layer = moe_ffns(method.model)[0].moe
    assert layer.router.active_mask.tolist() == [True] * 5 + [False] * 3
    torch.testing.assert_close(layer.experts.fc1_weight[4], layer.experts.fc1_weight[2])
    grad = experts.fc1_weight.grad
    torch.testing.assert_close(grad[4], before[2])                 # child: the full gradient
    wp, gp = w[2], before[2]
    proj = (gp * wp).sum(-1, keepdim=True) / (wp * wp).sum(-1, keepdim=True) * wp
    torch.testing.assert_close(grad[2], proj, rtol=1e-4, atol=1e-7)  # parent: along its rows
    torch.testing.assert_close(grad[0], before[0])                 # others untouched


def test_mass_update_end_to_end(tiny_bert):
    method = _method("mass", tiny_bert, MASS, n_steps=10)
    outs = [method.update(_batch(i)) for i in range(3)]
    assert all(math.isfinite(o["loss"]) for o in outs) and method.step == 3
    stats = method.routing_stats()
    assert stats["hf.bert.encoder.layer.1.intermediate.moe"]["tokens"] == 3 * 6 * 9
    state = method.state_dict()
    again = _method("mass", tiny_bert, MASS, n_steps=10)
    again.load_state_dict(state)
    assert again.step == 3 and again.mass.state_dict()["expansions"] == \
        method.mass.state_dict()["expansions"]


def test_gmoe_adds_the_weighted_balancing_loss(tiny_bert):
    method = _method("gmoe", tiny_bert, GMOE)
    method.model.train()
    loss = method.task_loss(_batch())
    aux = method.aux_loss()
    raw = moe_ffns(method.model)[0].moe.aux_losses["importance_load"]
    torch.testing.assert_close(aux, 0.01 * raw)
    assert float(raw.detach()) > 0 and loss.requires_grad
    out = method.update(_batch())
    assert out["loss_aux"] > 0
    stats = method.routing_stats()["hf.bert.encoder.layer.1.intermediate.moe"]
    assert stats["num_experts"] == 4 and stats["mean_k"] == pytest.approx(1.0)


def test_dense_is_the_unmodified_model(tiny_bert):
    method = _method("dense", tiny_bert, STUDY)
    ref = load_classifier(str(tiny_bert), 2)
    names = {n for n, _ in method.model.hf.named_parameters()}
    assert names == {n for n, _ in ref.named_parameters()}
    assert method.routing_stats() == {}


def test_linear_schedule_is_transformers_formula():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = linear_schedule(opt, 10, 0.2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 0.5, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])
