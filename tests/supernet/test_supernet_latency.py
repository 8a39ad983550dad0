"""Gold latency: trimmed mean, warm-up excluded, inference + eval mode, pinned threads,
beam folded into the batch; the latency dataset (resume, refusal, spread)."""
import json
import time

import numpy as np
import pytest
import torch

from moebench.errors import ParamsError, RunError
from moebench.supernet.latency import LatencySpec, measure_latency, trimmed_mean
from moebench.supernet.latency_dataset import (COLUMNS, build_latency_dataset, dataset_archs,
                                               dataset_arrays, measurement_spread,
                                               quantile_limits, read_rows)
from moebench.supernet.space import Space

TINY = {"encoder_embed_dim": [16, 8], "encoder_layer_num": [1],
        "encoder_ffn_embed_dim": [32, 16], "encoder_self_attention_heads": [2],
        "decoder_embed_dim": [16, 8], "decoder_layer_num": [2, 1],
        "decoder_ffn_embed_dim": [32, 16], "decoder_self_attention_heads": [2, 1],
        "decoder_ende_attention_heads": [2], "decoder_arbitrary_ende_attn": [-1], "qkv_dim": 8}


class _Enc:
    def __init__(self, batch):
        self.batch = batch

    def index_select(self, index):
        return _Enc(len(index))


class Scripted(torch.nn.Module):
    """Encoder calls sleep per a script (ms); records the mode of every call."""

    def __init__(self, enc_ms, dec_ms=0.0):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)
        self.enc_ms, self.dec_ms, self.calls, self.steps = list(enc_ms), dec_ms, [], []

    def _note(self):
        self.calls.append((torch.is_inference_mode_enabled(), self.training,
                           torch.get_num_threads()))

    def encode(self, src):
        self._note()
        assert src.shape[0] == 1 and src[0, 0] == 2 and (src[0, 1:] == 7).all()
        ms = self.enc_ms.pop(0) if self.enc_ms else 0.0
        time.sleep(ms / 1000)
        return _Enc(1)

    def decode_step(self, tokens, enc, cache):
        self._note()
        self.steps.append((tokens.shape[0], enc.batch, cache.get("n", 0)))
        cache["n"] = cache.get("n", 0) + 1
        time.sleep(self.dec_ms / 1000)
        return torch.zeros(tokens.shape[0], 5)


def test_trimmed_mean_drops_10_percent_each_side():
    values = [100.0] + [1.0] * 8 + [-50.0]
    assert trimmed_mean(values, 0.1) == 1.0
    assert trimmed_mean([3.0, 5.0], 0.1) == 4.0  # fewer than 10 runs: nothing dropped, not empty
    assert trimmed_mean(list(range(20)), 0.1) == pytest.approx(np.mean(range(2, 18)))
    with pytest.raises(ValueError):
        trimmed_mean([])


def test_warmup_excluded_trimmed_and_measured_in_inference_mode():
    # 3 slow warm-up runs (200 ms), then 10 timed runs of which one is an outlier (400 ms)
    script = [200.0] * 3 + [1.0] * 4 + [400.0] + [1.0] * 5
    model = Scripted(script).train()
    spec = LatencySpec(src_len=6, decode_steps=4, beam=3, warmup=3, runs=10, threads=1)
    before = torch.get_num_threads()
    out = measure_latency(model, spec)
    runs = sorted(out["encoder_runs"])
    assert len(runs) == 10 and runs[-1] >= 400 and runs[-2] < 200  # warm-ups not timed
    assert out["encoder_ms"] < 100  # the outlier is trimmed off
    assert out["latency_ms"] == pytest.approx(out["encoder_ms"] + out["decoder_ms"])
    assert all(c == (True, False, 1) for c in model.calls)  # inference mode, eval, 1 thread
    assert model.training and torch.get_num_threads() == before  # both restored
    # beam folded into the batch; each timed decoder run = decode_steps incremental steps
    assert set((b, e) for b, e, _ in model.steps) == {(3, 3)}
    assert [n for _, _, n in model.steps][:8] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert len(model.steps) == (3 + 10) * 4
    assert out["threads"] == 1 and out["torch"] == torch.__version__
    assert out["device"].startswith("cpu: ")


def test_measure_a_real_tiny_transformer():
    from moebench.supernet.model_plain import PlainConfig, Transformer

    space = Space.from_params(TINY)
    model = Transformer(PlainConfig.from_arch(space.largest(), vocab_size=40, qkv_dim=8))
    out = measure_latency(model, LatencySpec(src_len=5, decode_steps=3, warmup=1, runs=3))
    assert out["latency_ms"] > 0 and out["encoder_ms"] > 0 and out["decoder_ms"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_measure_on_cuda_with_events():
    from moebench.supernet.model_plain import PlainConfig, Transformer

    space = Space.from_params(TINY)
    model = Transformer(PlainConfig.from_arch(space.largest(), vocab_size=40, qkv_dim=8)).cuda()
    out = measure_latency(model, LatencySpec(src_len=5, decode_steps=3, warmup=1, runs=3))
    assert out["device"].startswith("cuda: ") and out["latency_ms"] > 0


@pytest.mark.parametrize("params, message", [
    ({"runs": 0}, "supernet.latency.runs: 0 must be a positive integer"),
    ({"trim": 0.5}, "supernet.latency.trim: 0.5 must be a number in [0, 0.5)"),
    ({"warmup": -1}, "warmup: -1 must be an integer >= 0"),
    ({"latiter": 20}, "supernet.latency.latiter: unknown key"),
])
def test_spec_refuses_with_one_line(params, message):
    with pytest.raises(ParamsError) as err:
        LatencySpec.from_params(params)
    assert message in str(err.value)


MACHINE = {"device": "cpu: test", "threads": 1, "torch": "x"}


def fake_measure(space, log):
    def measure(arch):
        key = space.arch_key(arch)
        lat = float(space.raw_features(arch).sum()) + 0.5 * (key in log)  # repeats: +0.5 ms
        log.append(key)
        return {"encoder_ms": 1.0, "decoder_ms": lat - 1.0, "latency_ms": lat}
    return measure


def test_dataset_rows_features_and_spread(tmp_path):
    space = Space.from_params(TINY)
    archs = dataset_archs(space, 12, seed=0)
    assert archs == dataset_archs(space, 12, seed=0)
    log = []
    rows = build_latency_dataset(tmp_path / "lat.csv", space, archs, 4, fake_measure(space, log),
                                 MACHINE)
    header = (tmp_path / "lat.csv").read_text().splitlines()[0]
    assert header == ",".join(COLUMNS)
    assert [(r["row"], r["pass"]) for r in rows] == [(i, 0) for i in range(12)] + [
        (i, 1) for i in range(4)]
    got_archs, feats, lat = dataset_arrays(rows)
    assert len(got_archs) == 12 and feats.shape == (12, 10)
    np.testing.assert_allclose(feats[3], space.raw_features(archs[3]))
    assert json.loads(rows[3]["arch"]) == space.canonical(archs[3])
    spread = measurement_spread(rows)
    assert spread["pairs"] == 4 and spread["rmse_ms"] == pytest.approx(0.5)
    diffs = [abs(r["latency_ms"] - rows[r["row"]]["latency_ms"]) / rows[r["row"]]["latency_ms"]
             for r in rows[12:]]
    assert spread["mapd"] == pytest.approx(100 * np.mean(diffs))
    assert quantile_limits(lat, [0.0, 1.0]) == [lat.min(), lat.max()]


def test_dataset_kill_and_resume_keeps_measured_rows(tmp_path):
    space = Space.from_params(TINY)
    archs = dataset_archs(space, 10, seed=1)
    path = tmp_path / "lat.csv"

    class Killed(Exception):
        pass

    log = []
    inner = fake_measure(space, log)

    def dying(arch):
        if len(log) == 6:
            raise Killed
        return inner(arch)

    with pytest.raises(Killed):
        build_latency_dataset(path, space, archs, 3, dying, MACHINE)
    assert len(read_rows(path)) == 6
    with open(path, "a") as f:  # a row cut in the middle of writing
        f.write("6,0,\"{\"enc")
    rows = build_latency_dataset(path, space, archs, 3, inner, MACHINE)
    assert len(log) == 13 and len(rows) == 13  # 6 before the kill, 7 after: none twice
    ref_log = []
    ref = build_latency_dataset(tmp_path / "ref.csv", space, archs, 3, fake_measure(space, ref_log),
                                MACHINE)
    assert ref_log == log
    strip = lambda rs: [{k: v for k, v in r.items() if k != "latency_ms"} for r in rs]  # noqa
    assert strip(rows) == strip(ref)
    before = path.read_text()
    assert build_latency_dataset(path, space, archs, 3, inner, MACHINE) == rows
    assert path.read_text() == before and len(log) == 13


def test_dataset_refuses_other_machine_or_params(tmp_path):
    space = Space.from_params(TINY)
    archs = dataset_archs(space, 4, seed=0)
    path = tmp_path / "lat.csv"
    build_latency_dataset(path, space, archs[:2], 0, fake_measure(space, []), MACHINE)
    with pytest.raises(RunError, match="measured with threads = 1, now 2"):
        build_latency_dataset(path, space, archs, 0, fake_measure(space, []),
                              {**MACHINE, "threads": 2})
    with pytest.raises(RunError, match="measured for other params"):
        build_latency_dataset(path, space, dataset_archs(space, 4, seed=9), 0,
                              fake_measure(space, []), MACHINE)
