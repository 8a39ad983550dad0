"""Drift correction of the gold latency: the reference subnet is timed run for run beside the
measured model, and latencies are scaled to the dataset's calibration (reference time)."""
import json

import numpy as np
import pytest

from moebench.cli.supernet import latency as latency_cli
from moebench.errors import ParamsError, RunError
from moebench.supernet.latency import LatencySpec, drift_corrected, measure_latency
from moebench.supernet.latency_dataset import (build_latency_dataset, calibration_ms,
                                               dataset_archs, dataset_arrays,
                                               measurement_spread, read_rows)
from moebench.supernet.search_io import GoldLatency, reference_arch
from moebench.supernet.space import Space
from test_supernet_latency import MACHINE, TINY, Scripted
from test_supernet_latency_cli import LATENCY, SPACE


class Logged(Scripted):
    """Scripted, writing its name to a shared log at every encoder call and decoder run."""

    def __init__(self, name, log, enc_ms, dec_ms=0.0):
        super().__init__(enc_ms, dec_ms)
        self.name, self.log = name, log

    def encode(self, src):
        self.log.append(("enc", self.name))
        return super().encode(src)

    def decode_step(self, tokens, enc, cache):
        if not cache:
            self.log.append(("dec", self.name))
        return super().decode_step(tokens, enc, cache)


def test_reference_runs_alternate_with_the_model_and_are_timed_apart():
    log = []
    model = Logged("m", log, [1.0] * 6).train()
    ref = Logged("r", log, [20.0] * 6).train()
    spec = LatencySpec(src_len=3, decode_steps=2, beam=2, warmup=1, runs=4, threads=1)
    out = measure_latency(model, spec, ref)
    enc = [n for kind, n in log if kind == "enc"]
    assert enc[:10] == ["m", "r"] * 5  # warm-up + 4 runs, in turn; then the beam's encoder out
    assert [n for kind, n in log if kind == "dec"] == ["m", "r"] * 5
    assert len(out["encoder_runs"]) == 4 and len(out["reference_runs"]) == 4
    assert out["encoder_ms"] < 10 and out["reference_ms"] > 19  # each model's own runs
    assert all(c[:2] == (True, False) for m in (model, ref) for c in m.calls)
    assert model.training and ref.training  # both restored
    assert "reference_ms" not in measure_latency(Scripted([1.0] * 5), spec)


def test_drift_corrected_scales_to_the_calibration():
    m = {"latency_ms": 12.0, "encoder_ms": 2.0, "decoder_ms": 10.0, "reference_ms": 6.0}
    c = drift_corrected(m, 3.0)  # the machine ran at half the calibration speed
    assert (c["latency_ms"], c["encoder_ms"], c["decoder_ms"], c["raw_ms"]) == (6.0, 1.0, 5.0, 12.0)
    with pytest.raises(ValueError, match="positive"):
        drift_corrected({**m, "reference_ms": 0.0}, 3.0)


def test_spec_reference_values():
    assert LatencySpec.from_params({"reference": "smallest"}).reference == "smallest"
    assert LatencySpec.from_params({}).reference is None  # HAT's protocol
    with pytest.raises(ParamsError, match="supernet.latency.reference: 'tiny' must be null or "
                                          "one of smallest, largest"):
        LatencySpec.from_params({"reference": "tiny"})


def drifting_measure(space, slow_rows):
    """Latency = feature sum, reference 2 ms; on the calls in ``slow_rows`` the machine is
    1.5x slower, for the model and the reference alike."""
    calls = []

    def measure(arch):
        f = 1.5 if len(calls) in slow_rows else 1.0
        calls.append(arch)
        lat = float(space.raw_features(arch).sum()) * f
        return {"encoder_ms": 1.0 * f, "decoder_ms": lat - 1.0 * f, "latency_ms": lat,
                "reference_ms": 2.0 * f}
    return measure


def test_dataset_with_reference_removes_the_drift(tmp_path):
    space = Space.from_params(TINY)
    archs = dataset_archs(space, 10, seed=0)
    path = tmp_path / "lat.csv"
    slow = {1, 4, 10, 12}  # rows 1 and 4 ran slow, and the repeats of rows 0 and 2
    rows = build_latency_dataset(path, space, archs, 4, drifting_measure(space, slow), MACHINE,
                                 reference=True)
    assert read_rows(path) == rows and rows[1]["reference_ms"] == 3.0
    assert calibration_ms(rows) == 2.0  # median over the dataset rows
    _, _, lat = dataset_arrays(rows)
    truth = [float(space.raw_features(space.canonical(a)).sum()) for a in archs]
    np.testing.assert_allclose(lat, truth)
    spread = measurement_spread(rows)
    assert spread["mapd"] == pytest.approx(0.0) and spread["rmse_ms"] == pytest.approx(0.0)
    # pairs of rows 0..3 uncorrected: +50 %, -1/3, +50 %, 0
    assert spread["mapd_uncorrected"] == pytest.approx(100 * (0.5 + 1 / 3 + 0.5 + 0) / 4)
    with pytest.raises(RunError, match="measured with a reference subnet, now without"):
        build_latency_dataset(path, space, archs, 5, drifting_measure(space, set()), MACHINE)


def test_gold_latency_from_the_summary(tmp_path):
    space = Space.from_params(SPACE)
    lat = {**LATENCY, "measure": {**LATENCY["measure"], "reference": "smallest"},
           "dataset": {"size": 10, "repeats": 2, "seed": 0}}
    out = tmp_path / "lat"
    args = ["dataset", "--space", json.dumps(SPACE), "--latency", json.dumps(lat),
            "--vocab-size", "30", "--work", str(out / "w.csv"), "--out", str(out / "d.csv"),
            "--summary", str(out / "s.json")]
    assert latency_cli.main(args) == 0
    summary = json.loads((out / "s.json").read_text())
    ref = summary["reference"]
    assert ref["subnet"] == "smallest" and ref["arch"] == reference_arch(space, "smallest")
    assert ref["calibration_ms"] == pytest.approx(calibration_ms(read_rows(out / "d.csv")))
    assert "mapd_uncorrected" in summary["spread"]
    timer = GoldLatency.from_summary(summary)
    assert timer.reference is not None and timer.calibration_ms == ref["calibration_ms"]
    from moebench.supernet.search_io import standalone

    m = timer.measure(standalone(space.largest(), space, 30))
    assert m["latency_ms"] == pytest.approx(m["raw_ms"] * ref["calibration_ms"]
                                            / m["reference_ms"])
    with pytest.raises(Exception, match="protocol.reference and reference disagree"):
        GoldLatency.from_summary({**summary, "reference": None})
    plain = GoldLatency.from_summary({**summary, "reference": None,
                                      "protocol": {**summary["protocol"], "reference": None}})
    assert "raw_ms" not in plain.measure(standalone(space.largest(), space, 30))


def test_reference_model_is_the_space_extreme():
    space = Space.from_params(TINY)
    assert reference_arch(space, "largest") == space.canonical(space.largest())
    assert reference_arch(space, "smallest") == space.canonical(space.smallest())
