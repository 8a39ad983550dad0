"""HAT's latency predictor and the least-squares linear baseline it is compared with.

The predictor (HAT, ``latency_predictor.py``) is an MLP on the 10 normalised architecture
features (:meth:`moebench.supernet.space.Space.features`): ``Linear(10 -> 400) + ReLU``, then
``3 x [Linear(400 -> 400) + ReLU]``, then ``Linear(400 -> 1)`` — four ReLU layers — trained
with MSE on ``latency / lat_norm`` (HAT: 200 ms on GPU, 300 ms on a Xeon), Adam, batch 128, on
a shuffled 80 / 10 / 10 train / valid / test split. Reported on the test part: RMSE (ms) and
MAPD (mean absolute percentage deviation, %). One addition to HAT: the weights kept are those
of the evaluation with the lowest valid RMSE (HAT keeps the last); ``eval_every`` sets how
often the valid part is scored.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from moebench.errors import RunError
from moebench.io import atomic_write
from moebench.supernet.search_params import PredictorSpec

log = logging.getLogger(__name__)


class LatencyMLP(nn.Module):
    """``layers`` ReLU layers of width ``hidden``, then a scalar. [N, F] -> [N]."""

    def __init__(self, in_features: int = 10, hidden: int = 400, layers: int = 4) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        blocks.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def split_indices(n: int, fractions: Sequence[float], seed: int) -> tuple[np.ndarray, ...]:
    """Shuffled (train, valid, test) row indices; every part gets at least one row."""
    if n < 3:
        raise RunError(f"a latency dataset of {n} rows cannot be split into train / valid / test")
    order = np.random.default_rng(seed).permutation(n)
    n_valid = max(1, int(round(fractions[1] * n)))
    n_test = max(1, int(round(fractions[2] * n)))
    n_train = n - n_valid - n_test
    if n_train < 1:
        raise RunError(f"a latency dataset of {n} rows leaves no training rows")
    return order[:n_train], order[n_train:n_train + n_valid], order[n_train + n_valid:]


def error_metrics(pred_ms: np.ndarray, true_ms: np.ndarray) -> dict[str, float]:
    """RMSE (ms) and MAPD (%, mean of |pred - true| / true) of predictions. Shapes [N]."""
    pred, true = np.asarray(pred_ms, dtype=float), np.asarray(true_ms, dtype=float)
    return {"rmse_ms": float(np.sqrt(np.mean((pred - true) ** 2))),
            "mapd": float(100 * np.mean(np.abs(pred - true) / true))}


@dataclass(frozen=True)
class LinearBaseline:
    """Least squares ``y = X w + b`` on the normalised features."""

    coef: tuple[float, ...]

    @classmethod
    def fit(cls, x: np.ndarray, y_ms: np.ndarray) -> "LinearBaseline":
        """Fit on features [N, F] and latencies [N] (ms)."""
        design = np.hstack([x, np.ones((len(x), 1))])
        coef, *_ = np.linalg.lstsq(design, np.asarray(y_ms, dtype=float), rcond=None)
        return cls(tuple(float(c) for c in coef))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """[N, F] -> [N] ms."""
        c = np.asarray(self.coef)
        return np.asarray(x, dtype=float) @ c[:-1] + c[-1]


class Predictor:
    """A trained latency MLP with its normaliser: features [N, F] -> latency [N] (ms)."""

    def __init__(self, model: LatencyMLP, spec: PredictorSpec,
                 history: Optional[list[dict[str, float]]] = None) -> None:
        self.model, self.spec, self.history = model.eval(), spec, list(history or [])

    @torch.inference_mode()
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Latency (ms) of normalised features [N, F]. Shape [N]."""
        t = torch.as_tensor(np.asarray(x, dtype=np.float32))
        return self.model(t).double().numpy() * self.spec.lat_norm

    def save(self, path: str | Path) -> None:
        payload = {"spec": asdict(self.spec), "state": self.model.state_dict(),
                   "in_features": self.model.net[0].in_features, "history": self.history}
        atomic_write(path, lambda fh: torch.save(payload, fh))

    @classmethod
    def load(cls, path: str | Path) -> "Predictor":
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError) as exc:
            raise RunError(f"cannot load latency predictor {path}: {exc}") from None
        spec = PredictorSpec(**{**payload["spec"], "split": tuple(payload["spec"]["split"])})
        model = LatencyMLP(payload["in_features"], spec.hidden, spec.layers)
        model.load_state_dict(payload["state"])
        return cls(model, spec, payload.get("history"))


def train_predictor(x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray,
                    y_valid: np.ndarray, spec: PredictorSpec) -> Predictor:
    """Train the MLP (MSE on latency / lat_norm); keep the weights of the best valid RMSE.

    ``x_*``: normalised features [N, F]; ``y_*``: latency [N] in ms.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = LatencyMLP(x_train.shape[1], spec.hidden, spec.layers)
    gen = torch.Generator().manual_seed(spec.seed)
    xt = torch.as_tensor(np.asarray(x_train, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(y_train, dtype=np.float32)) / spec.lat_norm
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr)
    best: tuple[float, dict[str, torch.Tensor]] = (float("inf"), {})
    history: list[dict[str, float]] = []
    for step in range(1, spec.steps + 1):
        idx = torch.randint(len(xt), (min(spec.batch_size, len(xt)),), generator=gen)
        loss = nn.functional.mse_loss(model(xt[idx]), yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % spec.eval_every == 0 or step == spec.steps:
            valid = error_metrics(Predictor(model, spec).predict(x_valid), y_valid)
            model.train()
            history.append({"step": step, "train_mse": loss.item(), **valid})
            if valid["rmse_ms"] < best[0]:
                best = (valid["rmse_ms"], {k: v.clone() for k, v in model.state_dict().items()})
    log.info("predictor: %d steps, best valid RMSE %.3f ms", spec.steps, best[0])
    model.load_state_dict(best[1])
    return Predictor(model, spec, history)


def fit_and_report(x: np.ndarray, y_ms: np.ndarray, spec: PredictorSpec
                   ) -> tuple[Predictor, LinearBaseline, dict[str, Any]]:
    """Split, train the MLP and the linear baseline on the train part, and score both (and
    the train mean as a trivial predictor) on the test part. ``x``: [N, F]; ``y_ms``: [N]."""
    tr, va, te = split_indices(len(x), spec.split, spec.seed)
    mlp = train_predictor(x[tr], y_ms[tr], x[va], y_ms[va], spec)
    linear = LinearBaseline.fit(x[tr], y_ms[tr])
    report = {
        "rows": {"train": int(len(tr)), "valid": int(len(va)), "test": int(len(te))},
        "test": {"mlp": error_metrics(mlp.predict(x[te]), y_ms[te]),
                 "linear": error_metrics(linear.predict(x[te]), y_ms[te]),
                 "mean": error_metrics(np.full(len(te), y_ms[tr].mean()), y_ms[te])},
        "valid": {"mlp": error_metrics(mlp.predict(x[va]), y_ms[va]),
                  "linear": error_metrics(linear.predict(x[va]), y_ms[va])},
        "test_index": [int(i) for i in te],
        "spec": {**asdict(spec), "split": list(spec.split)},
    }
    return mlp, linear, report
