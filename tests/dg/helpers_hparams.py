"""Small, complete hyperparameter dicts per algorithm for fast CPU tests (shared helper).

``tiny_hparams("gmoe", top_k=2)`` -> a flat dict with every key the algorithm reads: a 4-block,
32-d, 2-head ViT on 4x4 patches; MoE settings as GMoE but 4 experts.
"""
from __future__ import annotations

from typing import Any

COMMON: dict[str, Any] = {
    "lr": 1e-3,
    "weight_decay": 0.0,
    "batch_size": 8,
    "backbone": "vit_digits",
    "patch_size": 4,
    "embed_dim": 32,
    "depth": 4,
    "num_heads": 2,
    "mlp_ratio": 2.0,
    "drop_path_rate": 0.0,
    "pretrained": None,
    "moe_init": "upcycle",
}

MOE: dict[str, Any] = {
    "num_experts": 4,
    "router": "cosine_topk",
    "top_k": 1,
    "capacity_factor": 1.5,
    "gate_noise": 1.0,
    "batch_prioritized": True,
    "moe_blocks": "last_two_even",
    "aux_weight": 0.01,
    "expert_drop": 0.1,
}

EXTRA: dict[str, dict[str, Any]] = {
    "erm": {},
    "gmoe": MOE,
    "mass": {"num_experts": 3, "mass_max_experts": 4, "moe_blocks": "last_two_even",
             "expert_drop": 0.1, "mass_tau": 0.3, "mass_p_threshold": 0.01,
             "mass_similarity_threshold": 0.02, "mass_patience": 3,
             "mass_redundancy_weight": 0.01, "mass_warmup_min": 3, "mass_window_min": 6,
             "mass_expansion_end": 0.1},
    "mode": {"num_experts": 4, "expert_hidden": 16, "expert_drop": 0.0, "distill_alpha": 0.1,
             "distill_temperature": 2.0},
    "soft_moe": {"num_experts": 4, "slots_per_expert": 2, "moe_layer_index": 2,
                 "soft_normalize": True, "expert_drop": 0.1},
}


def tiny_hparams(algorithm: str, **overrides: Any) -> dict[str, Any]:
    """Complete tiny hparams for ``algorithm`` with ``overrides`` applied (unknown keys allowed)."""
    if algorithm not in EXTRA:
        raise KeyError(f"no tiny hparams for algorithm {algorithm!r}; known: {sorted(EXTRA)}")
    return {**COMMON, **EXTRA[algorithm], **overrides}
