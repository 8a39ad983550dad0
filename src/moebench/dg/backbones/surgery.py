"""MoE surgery on timm ViTs: choose blocks, swap their dense ``Mlp`` for a ``MoELayer``.

``apply_moe(model, blocks, upcycle=True, ...)`` follows GMoE's "sparse upcycling": every
expert starts as a copy of the block's dense (possibly pretrained) MLP; routers always start
fresh. With ``upcycle=False`` the experts keep the MoE layer's own random init.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence, Union

from torch import nn

log = logging.getLogger(__name__)

BlockRule = Union[str, Sequence[int]]


def moe_block_indices(depth: int, rule: BlockRule) -> list[int]:
    """0-based indices of the blocks that become MoE.

    ``"last_two_even"``: the two highest even indices (12 -> [8, 10], 4 -> [0, 2], 1 -> [0]);
    ``"every_two"``: every even index; a list of ints: validated (in range, no duplicates)
    and returned sorted; ``"none"`` or ``[]``: no MoE blocks.
    """
    if int(depth) < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    evens = list(range(0, int(depth), 2))
    if isinstance(rule, str):
        if rule == "last_two_even":
            return evens[-2:]
        if rule == "every_two":
            return evens
        if rule == "none":
            return []
        raise ValueError(f"unknown moe_blocks rule {rule!r}; valid: 'last_two_even', "
                         "'every_two', 'none' or a list of block indices")
    indices = list(rule)
    bad = [i for i in indices if isinstance(i, bool) or not isinstance(i, int)
           or not 0 <= i < depth]
    if bad:
        raise ValueError(f"moe_blocks {indices} has invalid block indices {bad} for depth {depth}")
    if len(set(indices)) != len(indices):
        raise ValueError(f"moe_blocks {indices} has duplicate block indices")
    return sorted(indices)


def _mlp_dims(mlp: nn.Module) -> dict[str, Any]:
    """Constructor keywords of a MoELayer matching a timm ``Mlp`` (fc1 -> act -> fc2)."""
    fc1, fc2 = getattr(mlp, "fc1", None), getattr(mlp, "fc2", None)
    if not isinstance(fc1, nn.Linear) or not isinstance(fc2, nn.Linear):
        raise TypeError("MoE surgery needs a timm Mlp with Linear fc1/fc2, "
                        f"got {type(mlp).__name__}")
    drop = getattr(mlp, "drop1", None)
    return {"in_features": fc1.in_features, "hidden_features": fc1.out_features,
            "out_features": fc2.out_features, "act_layer": type(mlp.act),
            "bias": fc1.bias is not None, "drop": float(getattr(drop, "p", 0.0)),
            "device": fc1.weight.device, "dtype": fc1.weight.dtype}


def vit_init_linears(module: nn.Module) -> None:
    """GMoE/timm ViT init of every ``nn.Linear`` in ``module``: trunc_normal(std .02), bias 0."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.trunc_normal_(sub.weight, std=0.02)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)


def apply_moe(model: nn.Module, blocks: Sequence[int], upcycle: bool = True,
              vit_init_router: bool = True, **moe_kwargs: Any) -> list[str]:
    """Replace ``model.blocks[i].mlp`` for each ``i`` in ``blocks`` by a ``MoELayer``.

    The layer gets the block's dims (D -> hidden -> D, same activation, bias, dropout); with
    ``upcycle`` every expert is loaded from the dense MLP (``layer.load_dense_mlp``).
    ``moe_kwargs`` go to ``MoELayer`` (num_experts, router, k, capacity_factor, gate_noise,
    batch_prioritized, expert_drop, router_kwargs). ``vit_init_router`` re-initialises the
    router's Linear layers as GMoE's ViT ``init_weights`` does (trunc_normal .02, zero bias).
    Returns the replaced module names.
    """
    from moebench.moe import MoELayer

    model_blocks = getattr(model, "blocks", None)
    if model_blocks is None:
        raise TypeError(f"{type(model).__name__} has no .blocks; expected a timm ViT")
    indices = moe_block_indices(len(model_blocks), list(blocks))
    names = []
    for i in indices:
        dense = model_blocks[i].mlp
        layer = MoELayer(**_mlp_dims(dense), **moe_kwargs)
        if vit_init_router:
            vit_init_linears(layer.router)
        if upcycle:
            layer.load_dense_mlp(dense)
        model_blocks[i].mlp = layer
        names.append(f"blocks.{i}.mlp")
    log.info("MoE in %s (upcycle=%s, %s)", names, upcycle, moe_kwargs)
    return names
