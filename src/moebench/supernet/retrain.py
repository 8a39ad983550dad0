"""Retraining a found subnet: from its inherited supernet weights or from scratch.

* ``inherited`` (MoS's claim: a few extra steps suffice): the subnet exported from the
  trained supernet (for MoS its mixtures materialised), trained further as a standalone
  Transformer; its BLEU before any step is the "inherited" BLEU.
* ``scratch`` (HAT's released pipeline, ``train.py --configs <searched.yml>`` without a
  restore file): the subnet of a freshly initialised supernet of the same variant (HAT trains
  the searched subnet inside a new SuperTransformer with the architecture fixed, i.e. the
  sliced super weights of a fresh init), trained as a standalone.

Both train with the study's resumable loop (:func:`moebench.supernet.train_run.run_training`,
one architecture per update, no sandwich); the step budget, peak lr and warm-up come from
params. Then BLEU / chrF on the test split (beam search, HAT's test settings) and the gold
latency of the final model on the latency machine.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from moebench.io import atomic_write, atomic_write_json
from moebench.runs import RunState
from moebench.supernet.data import Corpus, token_batches
from moebench.supernet.export import export
from moebench.supernet.model import SuperTransformer
from moebench.supernet.model_plain import PlainConfig, Transformer
from moebench.supernet.space import Arch
from moebench.supernet.train import TrainConfig, valid_loss
from moebench.supernet.train_run import run_training

log = logging.getLogger(__name__)
RESULT, MODEL = "result.json", "model.pt"
MODES = ("inherited", "scratch")


def start_model(supernet: SuperTransformer, arch: Arch, mode: str, seed: int) -> Transformer:
    """The standalone subnet retraining starts from (train mode, supernet's device)."""
    if mode not in MODES:
        raise ValueError(f"unknown retraining mode {mode!r}; valid: {', '.join(MODES)}")
    if mode == "inherited":
        return export(supernet, arch).train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = SuperTransformer(supernet.space, supernet.cfg)
    device = next(supernet.parameters()).device
    return export(fresh.to(device), arch).train()


def retrain_config(base: TrainConfig, mode_params: Mapping[str, Any], seed: int) -> TrainConfig:
    """``base`` (the supernet's optimiser settings) with the mode's budget: ``steps``, ``lr``,
    ``warmup``, ``max_tokens``, ``update_freq``, ``eval_every``; one architecture per update."""
    steps = int(mode_params["steps"])
    every = int(mode_params.get("eval_every", max(steps, 1)))
    return replace(base, max_updates=steps, lr=float(mode_params["lr"]),
                   warmup_updates=int(mode_params.get("warmup", 0)),
                   max_tokens=int(mode_params.get("max_tokens", base.max_tokens)),
                   eval_every=max(1, min(every, steps)) if steps else 1, sandwich=False,
                   update_freq=int(mode_params.get("update_freq", 1)), seed=seed)


def save_model(model: Transformer, path: Path) -> None:
    payload = {"kind": "subnet", "config": model.cfg.to_dict(), "state_dict": model.state_dict()}
    atomic_write(path, lambda fh: torch.save(payload, fh))


def load_model(path: Path, device: torch.device) -> Transformer:
    payload = torch.load(path, map_location="cpu", weights_only=False)
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in payload["config"].items()}
    model = Transformer(PlainConfig(**cfg))
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval()


def retrain_subnet(run_dir: str | Path, identity: Mapping[str, Any], supernet: SuperTransformer,
                   arch: Arch, mode: str, corpus: Corpus, cfg: TrainConfig,
                   bleu: Any, latency: Any = None,
                   valid_sentences: Optional[int] = None) -> dict[str, Any]:
    """Retrain one subnet (resumable; a finished run returns its stored result, whose
    ``model`` names the final model file).

    ``bleu(model) -> dict`` scores a standalone model on the test split; ``latency(model) ->
    dict`` (optional; the workflow measures final models in a job of their own) its gold
    latency (``latency_ms`` ...). Valid losses on the first ``valid_sentences`` valid pairs.
    """
    run = RunState(run_dir)
    if run.is_done() and (run.dir / RESULT).exists():
        return json.loads((run.dir / RESULT).read_text(encoding="utf-8"))
    device = next(supernet.parameters()).device
    pad = supernet.cfg.pad
    model = start_model(supernet, arch, mode, cfg.seed).to(device)
    valid = [b.to(device) for b in token_batches(corpus.splits["valid"].subset(valid_sentences),
                                                  cfg.max_tokens)]
    out: dict[str, Any] = {"mode": mode, "arch": arch, "steps": cfg.max_updates,
                           "valid_loss_start": valid_loss(model, None, valid,
                                                          cfg.label_smoothing, pad)}
    if mode == "inherited":
        out["bleu_start"] = bleu(model.eval())

    def evaluate() -> dict:
        return {"valid_loss": round(valid_loss(model, None, valid, cfg.label_smoothing, pad), 6)}

    base = {"args": {k: identity.get(k) for k in ("variant", "limit", "mode")},
            "hparams": {"train": cfg.to_dict()}, "moe_backend": "torch", "routing": {}}
    records = run_training(run.dir, identity, model, corpus.splits["train"], cfg, pad,
                           lambda u: [None], ["subnet"], evaluate,
                           lambda d: save_model(model, Path(d) / MODEL), base, progress=None)
    return _finish(run, model, out, records, valid, cfg, pad, bleu, latency, identity)


def _finish(run: RunState, model: Transformer, out: dict[str, Any], records: list[dict],
            valid: list, cfg: TrainConfig, pad: int, bleu: Any, latency: Any,
            identity: Mapping[str, Any]) -> dict[str, Any]:
    """Score the final model and store the result next to the run."""
    if run.is_done() and (run.dir / MODEL).exists():
        model = load_model(run.dir / MODEL, next(model.parameters()).device)
    model.eval()
    last = records[-1] if records else {}
    out["valid_loss"] = last["valid_loss"] if "valid_loss" in last and not last.get(
        "diverged") and last.get("step") == cfg.max_updates else valid_loss(
        model, None, valid, cfg.label_smoothing, pad)
    out["records"] = len(records)
    out["diverged"] = any(r.get("diverged") for r in records)
    out["bleu"] = bleu(model)
    if latency is not None:
        out["latency"] = latency(model)
    out["params"] = sum(p.numel() for p in model.parameters())
    if not (run.dir / MODEL).exists():  # a run of 0 steps: the start model is the final one
        save_model(model, run.dir / MODEL)
    out["model"] = str(run.dir / MODEL)
    atomic_write_json(run.dir / RESULT, out)
    log.info("%s %s: valid loss %.4f -> %.4f after %d steps, BLEU %.2f", identity.get("limit"),
             out["mode"], out["valid_loss_start"], out["valid_loss"], cfg.max_updates,
             out["bleu"]["bleu"])
    return out
