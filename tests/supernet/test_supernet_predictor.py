"""Latency predictor: HAT's MLP shape, split, metrics, training on synthetic data, baseline."""
import numpy as np
import pytest
import torch

from moebench.errors import ParamsError
from moebench.supernet.predictor import (LatencyMLP, LinearBaseline, Predictor, PredictorSpec,
                                         error_metrics, fit_and_report, split_indices,
                                         train_predictor)


def synthetic(n=400, noise=1.0, seed=0):
    """Latency = linear in 10 features plus Gaussian noise (ms)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 1.5, size=(n, 10))
    w = rng.uniform(5, 40, size=10)
    return x, 20 + x @ w + rng.normal(0, noise, n), w


def test_mlp_is_hats_four_relu_layers_of_400():
    model = LatencyMLP()
    linears = [m for m in model.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (10, 400), (400, 400), (400, 400), (400, 400), (400, 1)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in model.net) == 4
    assert model(torch.zeros(7, 10)).shape == (7,)


def test_split_is_80_10_10_disjoint_and_seeded():
    tr, va, te = split_indices(200, (0.8, 0.1, 0.1), seed=3)
    assert (len(tr), len(va), len(te)) == (160, 20, 20)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(200))
    assert np.array_equal(split_indices(200, (0.8, 0.1, 0.1), 3)[2], te)
    assert not np.array_equal(split_indices(200, (0.8, 0.1, 0.1), 4)[2], te)


def test_error_metrics_by_hand():
    m = error_metrics(np.array([110.0, 90.0, 50.0]), np.array([100.0, 100.0, 40.0]))
    assert m["rmse_ms"] == pytest.approx(np.sqrt((100 + 100 + 100) / 3))
    assert m["mapd"] == pytest.approx(100 * (0.1 + 0.1 + 0.25) / 3)


def test_linear_baseline_recovers_a_linear_law():
    x, y, w = synthetic(noise=0.0)
    lin = LinearBaseline.fit(x, y)
    np.testing.assert_allclose(lin.coef[:-1], w, rtol=1e-8)
    assert lin.coef[-1] == pytest.approx(20)


def test_training_reduces_error_on_linear_plus_noise():
    x, y, _ = synthetic(noise=1.0)
    # HAT's shape, narrower so that the test takes seconds
    spec = PredictorSpec(hidden=64, lr=1e-3, steps=1500, eval_every=100, seed=0)
    tr, va, te = split_indices(len(x), spec.split, spec.seed)
    untrained = Predictor(LatencyMLP(10, 64, 4), spec).predict(x[te])
    before = error_metrics(untrained, y[te])
    mlp = train_predictor(x[tr], y[tr], x[va], y[va], spec)
    after = error_metrics(mlp.predict(x[te]), y[te])
    assert after["rmse_ms"] < before["rmse_ms"] / 20
    assert after["rmse_ms"] < 3.0  # noise is 1 ms, latencies ~ 250 ms
    assert mlp.history[-1]["step"] == 1500 and len(mlp.history) == 15


def test_fit_and_report_scores_mlp_linear_and_mean_on_the_test_part(tmp_path):
    x, y, _ = synthetic(n=200, noise=2.0, seed=1)
    spec = PredictorSpec(hidden=64, lr=1e-3, steps=600, eval_every=50, seed=2)
    mlp, linear, report = fit_and_report(x, y, spec)
    assert report["rows"] == {"train": 160, "valid": 20, "test": 20}
    test = report["test"]
    assert test["linear"]["rmse_ms"] < test["mean"]["rmse_ms"] / 5
    assert test["mlp"]["rmse_ms"] < test["mean"]["rmse_ms"] / 5
    te = report["test_index"]
    assert test["linear"] == error_metrics(linear.predict(x[te]), y[te])
    mlp.save(tmp_path / "p.pt")
    again = Predictor.load(tmp_path / "p.pt")
    np.testing.assert_array_equal(again.predict(x), mlp.predict(x))
    assert again.spec == spec


def test_training_is_seeded():
    x, y, _ = synthetic(n=60)
    spec = PredictorSpec(hidden=16, steps=30, eval_every=10, lr=1e-3)
    a = train_predictor(x[:40], y[:40], x[40:], y[40:], spec).predict(x)
    b = train_predictor(x[:40], y[:40], x[40:], y[40:], spec).predict(x)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("params, message", [
    ({"hidden": 0}, "supernet.predictor.hidden: 0 must be a positive integer"),
    ({"lr": "1e-5"}, "YAML reads 1e-5 as a string"),
    ({"split": [0.8, 0.2]}, "supernet.predictor.split: [0.8, 0.2] must be three positive"),
    ({"width": 4}, "supernet.predictor.width: unknown key"),
])
def test_spec_from_params_refuses_with_one_line(params, message):
    with pytest.raises(ParamsError) as err:
        PredictorSpec.from_params(params)
    assert message in str(err.value)


def test_spec_from_params_defaults_are_hats():
    spec = PredictorSpec.from_params({})
    assert (spec.hidden, spec.layers, spec.lr, spec.batch_size, spec.steps, spec.lat_norm) == (
        400, 4, 1e-5, 128, 5000, 200.0)
