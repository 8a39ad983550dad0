"""The training half of the ``supernet`` params section, torch-free (the workflow reads it
while it parses).

Keys (``params/supernet/supernet.yaml``; docs/supernet.md explains each)::

    supernet.runs_root, device, threads
    supernet.data     corpus (ding | fairseq), dir, ding {path, url, sha256}, fairseq {url,
                      sha256, src_lang, tgt_lang}, valid_size, test_size, spm {vocab_size,
                      model_type}, max_len
    supernet.model    variants, num_experts (list), seeds, router_hidden, router_dropout,
                      dropout, attention_dropout, activation_dropout
    supernet.train    TrainConfig's fields (moebench.supernet.train)
    supernet.eval     sampled_archs, arch_seed, valid_sentences, test_sentences, max_tokens,
                      beam, lenpen, max_len_a, max_len_b, greedy
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from moebench.errors import ParamsError

VARIANTS = ("hat", "mos_layer", "mos_neuron")
MODEL_KEYS = ("router_hidden", "router_dropout", "dropout", "attention_dropout",
              "activation_dropout")
TRAIN_KEYS = ("max_updates", "lr", "warmup_updates", "warmup_init_lr", "min_lr", "adam_betas",
              "adam_eps", "weight_decay", "clip_norm", "label_smoothing", "max_tokens",
              "update_freq", "sandwich", "eval_every", "valid_max_tokens")


@dataclass(frozen=True)
class RunKey:
    """One supernet training run of the grid."""

    variant: str
    experts: int
    seed: int

    @property
    def name(self) -> str:
        """``hat-s1`` / ``mos_layer-e2-s1`` (marker file names, wildcard values)."""
        return f"{self.variant}-s{self.seed}" if self.variant == "hat" else \
            f"{self.variant}-e{self.experts}-s{self.seed}"


def run_grid(section: Mapping[str, Any]) -> list[RunKey]:
    """Every (variant, experts, seed) to train: ``hat`` once per seed, each MoS variant per
    number of experts and seed."""
    m = section["model"]
    out = []
    for v in m["variants"]:
        for e in ([1] if v == "hat" else m["num_experts"]):
            out += [RunKey(v, int(e), int(s)) for s in m["seeds"]]
    return out


def parse_run_name(name: str) -> RunKey:
    """Inverse of :attr:`RunKey.name`."""
    parts = name.split("-")
    try:
        if parts[0] == "hat" and len(parts) == 2:
            return RunKey("hat", 1, int(parts[1][1:]))
        if parts[0] in VARIANTS and len(parts) == 3:
            return RunKey(parts[0], int(parts[1][1:]), int(parts[2][1:]))
    except ValueError:
        pass
    raise ParamsError(f"not a supernet run name: {name!r} (e.g. hat-s1, mos_layer-e2-s1)")


def model_kwargs(section: Mapping[str, Any], key: RunKey) -> dict[str, Any]:
    """Keyword arguments of ``ModelConfig`` (vocabulary size and specials added later)."""
    m = section["model"]
    return {"ffn": key.variant, "num_experts": key.experts,
            **{k: m[k] for k in MODEL_KEYS}}


def train_kwargs(section: Mapping[str, Any], key: RunKey) -> dict[str, Any]:
    """Keyword arguments of ``TrainConfig``."""
    t = dict(section["train"])
    t.pop("valid_max_tokens", None)
    t["adam_betas"] = tuple(t["adam_betas"])
    return {**t, "seed": key.seed}


def data_identity(section: Mapping[str, Any]) -> dict[str, Any]:
    """The data part of a run's identity (no local paths)."""
    d = section["data"]
    if d["corpus"] == "ding":
        return {"corpus": "ding", "valid_size": d["valid_size"], "test_size": d["test_size"],
                "spm": d["spm"], "max_len": d["max_len"]}
    f = d["fairseq"]
    return {"corpus": "fairseq", "task": f["task"], "src_lang": f["src_lang"],
            "tgt_lang": f["tgt_lang"], "max_len": d["max_len"]}


def check(section: Mapping[str, Any]) -> None:
    """Cross-key checks the schema cannot express (one line naming the key)."""
    m, t = section["model"], section["train"]
    if t["warmup_updates"] > t["max_updates"]:
        raise ParamsError(f"supernet.train.warmup_updates: {t['warmup_updates']} is above "
                          f"max_updates {t['max_updates']}")
    if t["eval_every"] > t["max_updates"]:
        raise ParamsError(f"supernet.train.eval_every: {t['eval_every']} is above "
                          f"max_updates {t['max_updates']}")
    if len(set(m["variants"])) != len(m["variants"]):
        raise ParamsError(f"supernet.model.variants: {m['variants']} lists a variant twice")
    if section["data"]["corpus"] == "fairseq" and not section["data"].get("fairseq"):
        raise ParamsError("supernet.data.fairseq: needed when corpus is fairseq")


def section_json(section: Mapping[str, Any]) -> str:
    """The section as compact JSON (passed to the command lines)."""
    return json.dumps(section, sort_keys=True, separators=(",", ":"))
