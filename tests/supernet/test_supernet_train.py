"""Sandwich-rule training: schedule, architectures per update, summed gradients that reach the
largest and smallest subnets, valid loss, kill-and-resume, divergence, standalone retraining."""
import math

import numpy as np
import pytest
import torch

from moebench.runs import RunState
from moebench.supernet.data import Corpus, Parallel, token_batches
from moebench.supernet.export import export
from moebench.supernet.model import ModelConfig, SuperTransformer
from moebench.supernet.model_layers import label_smoothed_nll
from moebench.supernet.space import Space
from moebench.supernet.train import (TrainConfig, lr_at, make_optimizer, sandwich_archs,
                                     train_step, valid_loss)
from moebench.supernet.train_run import comparable, run_training
from moebench.supernet.train_supernet import (identity, load_supernet, run_dir_for,
                                              train_supernet)

SPACE = {"encoder_embed_dim": [16, 12], "encoder_layer_num": [2],
         "encoder_ffn_embed_dim": [32, 16], "encoder_self_attention_heads": [4, 2],
         "decoder_embed_dim": [16, 12], "decoder_layer_num": [2, 1],
         "decoder_ffn_embed_dim": [32, 16], "decoder_self_attention_heads": [4, 2],
         "decoder_ende_attention_heads": [4, 2], "decoder_arbitrary_ende_attn": [-1, 1],
         "qkv_dim": 8}
V = 24


@pytest.fixture
def space():
    return Space.from_params(SPACE)


def _corpus(n=120, seed=0):
    """Targets = sources reversed (+4 shift): learnable, deterministic."""
    rng = np.random.default_rng(seed)
    src, tgt = [], []
    for _ in range(n):
        s = rng.integers(4, V - 4, rng.integers(3, 9))
        src.append(np.concatenate([s, [2]]))
        tgt.append(np.concatenate([s[::-1] + 4, [2]]))
    data = Parallel(src, tgt)
    return Corpus(vocab=None, splits={"train": data, "valid": data.subset(30),
                                      "test": data.subset(30)}, references={}, kind="toy")


def test_learning_rate_warms_up_linearly_then_cosine():
    cfg = TrainConfig(max_updates=100, lr=1e-3, warmup_updates=10)
    assert lr_at(0, cfg) == pytest.approx(1e-7)
    assert lr_at(5, cfg) == pytest.approx(1e-7 + (1e-3 - 1e-7) / 2)
    assert lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(55, cfg) == pytest.approx(1e-7 + 0.5 * (1e-3 - 1e-7))
    assert lr_at(100, cfg) == pytest.approx(1e-7)
    lrs = [lr_at(u, cfg) for u in range(101)]
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_sandwich_architectures_per_update(space):
    a = sandwich_archs(space, 7, seed=1)
    assert len(a) == 3 and a[1] == space.largest() and a[2] == space.smallest()
    assert a == sandwich_archs(space, 7, seed=1)
    randoms = {space.arch_key(sandwich_archs(space, u, 1)[0]) for u in range(20)}
    assert len(randoms) > 10
    assert len(sandwich_archs(space, 7, 1, sandwich=False)) == 1


def _grads(model):
    return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for n, p in model.named_parameters()}


@pytest.mark.parametrize("variant", ["hat", "mos_neuron"])
def test_sandwich_update_sums_the_gradients_of_all_three_subnets(space, variant):
    torch.manual_seed(0)
    cfg_m = ModelConfig(vocab_size=V, ffn=variant, router_hidden=8, dropout=0.0,
                        attention_dropout=0.0, router_dropout=0.0)
    model = SuperTransformer(space, cfg_m)
    batches = token_batches(_corpus().splits["train"], 200)[:2]
    archs = sandwich_archs(space, 3, seed=1)
    cfg = TrainConfig(lr=0.0, warmup_updates=0, max_updates=10)
    opt = make_optimizer(model, cfg)
    train_step(model, opt, batches, archs, cfg, 1, lr=0.0)  # lr 0: weights unchanged
    summed = _grads(model)
    tokens = sum(b.ntokens for b in batches) * 3
    parts = []
    for arch in archs:
        model.zero_grad()
        for b in batches:
            loss, _, _ = label_smoothed_nll(model(b.src, b.prev, arch), b.target, 1, 0.1)
            (loss / tokens).backward()
        parts.append(_grads(model))
    for n in summed:
        torch.testing.assert_close(summed[n], sum(p[n] for p in parts), rtol=1e-4, atol=1e-7)
    big, small = parts[1], parts[2]
    # the largest subnet reaches every parameter of the supernet (all layers, full widths)
    assert all(bool((g != 0).any()) for g in big.values())
    w = "encoder.0.ffn.fc1_weight"
    assert bool((big[w][..., 12:] != 0).any()) and bool((small[w][..., 12:] == 0).all())
    assert bool((small[w][..., :16, :12] != 0).any())  # the smallest's own slice
    assert bool((small["decoder.1.self_attn.in_weight"] == 0).all())  # 1 decoder layer
    assert bool((summed[w][..., :16, :12] != 0).all())


def test_valid_loss_is_the_label_smoothed_loss_per_target_token(space):
    torch.manual_seed(0)
    model = SuperTransformer(space, ModelConfig(vocab_size=V)).eval()
    batches = token_batches(_corpus().splits["valid"], 100)
    arch = space.smallest()
    with torch.no_grad():
        total = sum(float(label_smoothed_nll(model(b.src, b.prev, arch), b.target, 1, 0.1)[0])
                    for b in batches)
        nll = sum(float(label_smoothed_nll(model(b.src, b.prev, arch), b.target, 1, 0.1)[1])
                  for b in batches)
    n = sum(b.ntokens for b in batches)
    assert valid_loss(model, arch, batches) == pytest.approx(total / n, rel=1e-6)
    assert valid_loss(model, arch, batches, nll=True) == pytest.approx(nll / n, rel=1e-6)
    assert abs(valid_loss(model, arch, batches, nll=True) - math.log(V)) < 1.5


def _train(space, root, variant="mos_layer", updates=12, **kw):
    mcfg = ModelConfig(vocab_size=V, ffn=variant, router_hidden=8, dropout=0.1)
    tcfg = TrainConfig(max_updates=updates, lr=3e-3, warmup_updates=3, max_tokens=120,
                       update_freq=2, eval_every=4, seed=3)
    ident = identity(variant, 3, space, mcfg, tcfg, {"corpus": "toy"})
    return train_supernet(run_dir_for(root, ident), ident, _corpus(), space, mcfg, tcfg,
                          torch.device("cpu"), valid_max_tokens=200, progress=False, **kw), ident


def test_training_records_and_loss_going_down(space, tmp_path):
    recs, ident = _train(space, tmp_path, updates=24)
    assert [r["step"] for r in recs] == [4, 8, 12, 16, 20, 24]
    r = recs[-1]
    for key in ("args", "hparams", "step", "epoch", "loss", "step_time", "mem_gb",
                "moe_backend", "routing", "train_loss_random", "train_loss_largest",
                "train_loss_smallest", "valid_loss_largest", "valid_loss_smallest", "lr"):
        assert key in r, key
    assert r["valid_loss_largest"] < recs[0]["valid_loss_largest"]
    assert set(r["routing"]["encoder.0.ffn"]) == {"largest", "smallest"}
    d = run_dir_for(tmp_path, ident)
    assert RunState(d).is_done() and not (d / "checkpoint.pt").exists()
    model = load_supernet(d / "model.pt")
    valid = token_batches(_corpus().splits["valid"], 200)
    assert valid_loss(model, space.largest(), valid) == pytest.approx(r["valid_loss_largest"],
                                                                       abs=1e-5)


class _Kill(Exception):
    pass


def test_kill_and_resume_gives_the_same_records(space, tmp_path, monkeypatch):
    full, _ = _train(space, tmp_path / "a")
    import moebench.supernet.train_supernet as ts

    real = ts.sandwich_archs
    for kill_at in (6, 9):  # mid-interval, then again after the resumed part wrote a record
        def dying(sp, u, seed, sandwich=True, _k=kill_at):
            if u == _k:
                raise _Kill()
            return real(sp, u, seed, sandwich)

        monkeypatch.setattr(ts, "sandwich_archs", dying)
        with pytest.raises(_Kill):
            _train(space, tmp_path / "b")
    monkeypatch.setattr(ts, "sandwich_archs", real)
    resumed, ident = _train(space, tmp_path / "b")
    assert comparable(resumed) == comparable(full)
    assert RunState(run_dir_for(tmp_path / "b", ident)).is_done()


def test_divergence_ends_the_run_with_a_diverged_record(space, tmp_path):
    torch.manual_seed(0)
    model = SuperTransformer(space, ModelConfig(vocab_size=V))
    cfg = TrainConfig(max_updates=10, max_tokens=120, eval_every=5)

    def archs(u):
        if u == 2:
            with torch.no_grad():
                model.embed_weight.fill_(float("nan"))
        return [space.largest()]

    recs = run_training(tmp_path / "r", {"x": 1}, model, _corpus().splits["train"], cfg, 1,
                        archs, ["largest"], lambda: {}, lambda d: None, {"args": {}},
                        progress=False)
    assert len(recs) == 1 and recs[0]["diverged"] is True and recs[0]["step"] == 3
    assert math.isnan(recs[0]["loss"]) and RunState(tmp_path / "r").is_done()


def test_a_standalone_subnet_retrains_with_the_same_loop(space, tmp_path):
    """Part 2's retraining: an exported subnet, architectures [None]."""
    torch.manual_seed(0)
    sup = SuperTransformer(space, ModelConfig(vocab_size=V, ffn="mos_neuron", router_hidden=8))
    sub = export(sup, space.smallest()).train()
    data = _corpus()
    valid = token_batches(data.splits["valid"], 200)
    before = valid_loss(sub, None, valid)
    assert before == pytest.approx(valid_loss(sup, space.smallest(), valid), rel=1e-5)
    cfg = TrainConfig(max_updates=8, lr=3e-3, warmup_updates=2, max_tokens=120, eval_every=8)
    recs = run_training(tmp_path / "s", {"sub": 1}, sub, data.splits["train"], cfg, 1,
                        lambda u: [None], ["subnet"],
                        lambda: {"valid_loss": valid_loss(sub, None, valid)},
                        lambda d: None, {"args": {}}, progress=False)
    assert recs[-1]["valid_loss"] < before and "train_loss_subnet" in recs[-1]
