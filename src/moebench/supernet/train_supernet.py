"""Train one SuperTransformer (one FFN variant x seed) and save / load trained supernets.

The run directory (``results/supernet/runs/<variant>/<run_hash>/``) holds the records of
:func:`moebench.supernet.train_run.run_training`: per record the interval's train loss of the
random / largest / smallest subnet, the validation loss (label-smoothed, nats per target
token) of the largest and the smallest, the MoS mixing weights of both (``routing``) and
timings; ``model.pt`` is the trained supernet.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from moebench.errors import RunError
from moebench.runs import run_hash
from moebench.supernet.data import Corpus, token_batches
from moebench.supernet.model import ModelConfig, SuperTransformer
from moebench.supernet.space import Space
from moebench.supernet.train import TrainConfig, sandwich_archs, valid_loss
from moebench.supernet.train_run import run_training

MODEL_FILE = "model.pt"


def save_supernet(model: SuperTransformer, path: str | Path) -> None:
    """model.pt: the space, the model config and the weights."""
    from moebench.io import atomic_write

    payload = {"kind": "supernet", "space": model.space.to_params(),
               "model": model.cfg.to_dict(), "state_dict": model.state_dict()}
    atomic_write(path, lambda fh: torch.save(payload, fh))


def load_supernet(path: str | Path, device: str | torch.device = "cpu") -> SuperTransformer:
    """A trained supernet saved by :func:`save_supernet` (eval mode)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise RunError(f"{path}: no trained supernet (run the supernet training rule)") from None
    if not isinstance(payload, dict) or payload.get("kind") != "supernet":
        raise RunError(f"{path}: not a supernet checkpoint written by moebench")
    model = SuperTransformer(Space.from_params(payload["space"]), ModelConfig(**payload["model"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval()


def identity(variant: str, seed: int, space: Space, model_cfg: ModelConfig,
             train_cfg: TrainConfig, data: Mapping[str, Any]) -> dict[str, Any]:
    """The path-free identity of a supernet run (its hash names the run directory)."""
    return {"study": "supernet", "stage": "supernet", "variant": variant, "seed": seed,
            "space": space.to_params(), "model": model_cfg.to_dict(),
            "train": train_cfg.to_dict(), "data": dict(data)}


def run_dir_for(root: str | Path, ident: Mapping[str, Any]) -> Path:
    return Path(root) / ident["variant"] / run_hash(ident)


def train_supernet(run_dir: str | Path, ident: Mapping[str, Any], corpus: Corpus,
                   space: Space, model_cfg: ModelConfig, cfg: TrainConfig,
                   device: torch.device, valid_max_tokens: int = 4096,
                   max_len: int = 256, progress: Optional[bool] = None) -> list[dict]:
    """Sandwich-rule training of one supernet; returns its records."""
    torch.manual_seed(cfg.seed)
    model = SuperTransformer(space, model_cfg).to(device)
    train = corpus.splits["train"].filter_length(max_len)
    valid = [b.to(device) for b in token_batches(corpus.splits["valid"], valid_max_tokens)]
    big, small = space.largest(), space.smallest()

    def evaluate() -> dict:
        model.eval()
        out = {"valid_loss_largest": round(valid_loss(model, big, valid, cfg.label_smoothing,
                                                      model_cfg.pad), 6),
               "valid_loss_smallest": round(valid_loss(model, small, valid,
                                                       cfg.label_smoothing, model_cfg.pad), 6),
               "routing": model.routing_stats({"largest": big, "smallest": small})}
        model.train()
        return out

    names = ["random", "largest", "smallest"] if cfg.sandwich else ["random"]
    base = {"args": {k: ident[k] for k in ("variant", "seed")} | {"data": ident["data"]},
            "hparams": {"model": model_cfg.to_dict(), "train": cfg.to_dict()},
            "moe_backend": "torch",
            "device": str(device), "torch": torch.__version__}
    return run_training(run_dir, ident, model, train, cfg, model_cfg.pad,
                        lambda u: sandwich_archs(space, u, cfg.seed, cfg.sandwich), names,
                        evaluate, lambda d: save_supernet(model, Path(d) / MODEL_FILE), base,
                        progress)
