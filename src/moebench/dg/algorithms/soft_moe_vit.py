"""Soft-MoE Vision Transformers on timm's ``VisionTransformer`` (Puigcerver et al. 2023; spec
vision_dg §4; API of bwconrad/soft-moe, but built by surgery on timm's class, not a copy).

* :func:`soft_moe_block_indices` — ``moe_layer_index`` semantics (0-based): an int ``k`` means
  blocks ``k .. depth-1``; a list means exactly those blocks.
* :func:`apply_soft_moe` — replace those blocks' dense ``Mlp`` by Soft-MoE layers, experts
  fresh (timm's ViT init) or upcycled from the dense (e.g. pretrained) MLP as in GMoE.
* :class:`SoftMoEVisionTransformer` and the timm-registered presets
  ``soft_moe_vit_{tiny,small,base,large,huge}`` (128 experts x 1 slot; MoE in the second
  half of the blocks): ``timm.create_model("soft_moe_vit_small", num_classes=10)``.

Two expert implementations give the same function: ``"batched"`` (default) is the core
``MoELayer(router="soft")`` with stacked expert tensors (fast, routing stats, GMoE-style
upcycling); ``"wrapper"`` is :class:`~moebench.moe.soft_moe.SoftMoELayerWrapper` around
``num_experts`` timm ``Mlp`` modules (bwconrad's structure; any expert layer).
"""
from __future__ import annotations

import logging
from typing import Any, Sequence, Union

import torch
from timm.layers import Mlp
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from moebench.dg.backbones.surgery import _mlp_dims, apply_moe, vit_init_linears
from moebench.moe.soft_moe import SoftMoELayerWrapper

log = logging.getLogger(__name__)

LayerIndex = Union[int, Sequence[int]]
EXPERT_IMPLS = ("batched", "wrapper")
SOFT_MOE_DEFAULTS: dict[str, Any] = {"num_experts": 128, "slots_per_expert": 1}
PRESETS: dict[str, dict[str, Any]] = {
    "soft_moe_vit_tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3, "moe_layer_index": 6},
    "soft_moe_vit_small": {"embed_dim": 384, "depth": 12, "num_heads": 6, "moe_layer_index": 6},
    "soft_moe_vit_base": {"embed_dim": 768, "depth": 12, "num_heads": 12, "moe_layer_index": 6},
    "soft_moe_vit_large": {"embed_dim": 1024, "depth": 24, "num_heads": 16,
                           "moe_layer_index": 12},
    "soft_moe_vit_huge": {"embed_dim": 1280, "depth": 32, "num_heads": 16,
                          "moe_layer_index": 16},
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def soft_moe_block_indices(depth: int, moe_layer_index: LayerIndex) -> list[int]:
    """0-based Soft-MoE block indices: int k -> [k, ..., depth-1]; list -> exactly those
    (sorted). ValueError for an index outside [0, depth), an empty list, duplicates, or a
    value that is neither an int nor a list of ints."""
    if not _is_int(depth) or depth < 1:
        raise ValueError(f"depth must be an int >= 1, got {depth!r}")
    if _is_int(moe_layer_index):
        if not 0 <= moe_layer_index < depth:
            raise ValueError(f"moe_layer_index {moe_layer_index} is out of range [0, {depth}) "
                             f"for depth {depth}")
        return list(range(moe_layer_index, depth))
    if isinstance(moe_layer_index, (str, bytes)) or not isinstance(moe_layer_index, Sequence):
        raise ValueError(f"moe_layer_index must be an int or a list of ints, "
                         f"got {moe_layer_index!r}")
    indices = list(moe_layer_index)
    if not indices:
        raise ValueError("moe_layer_index list is empty; give at least one block index")
    bad = [i for i in indices if not _is_int(i) or not 0 <= i < depth]
    if bad:
        raise ValueError(f"moe_layer_index {indices} has invalid block indices {bad} "
                         f"for depth {depth}")
    if len(set(indices)) != len(indices):
        raise ValueError(f"moe_layer_index {indices} has duplicate block indices")
    return sorted(indices)


@torch.no_grad()
def _timm_init_batched(layer: nn.Module) -> None:
    """timm ViT init of stacked experts: weights trunc_normal(std .02), biases 0."""
    experts = layer.experts
    for w in (experts.fc1_weight, experts.fc2_weight):
        nn.init.trunc_normal_(w, std=0.02)
    for b in (experts.fc1_bias, experts.fc2_bias):
        if b is not None:
            nn.init.zeros_(b)


def _wrapper_layer(dense: nn.Module, num_experts: int, slots_per_expert: int, normalize: bool,
                   upcycle: bool, expert_drop: Any) -> nn.Module:
    """SoftMoELayerWrapper around ``num_experts`` timm ``Mlp`` copies of ``dense``'s dims."""
    kwargs = _mlp_dims(dense)
    if expert_drop is not None:
        kwargs["drop"] = (float(expert_drop), kwargs["drop"])
    layer = SoftMoELayerWrapper(kwargs["in_features"], num_experts, slots_per_expert, Mlp,
                                normalize=normalize, **kwargs)
    for expert in layer.experts:
        if upcycle:
            expert.load_state_dict(dense.state_dict())
        else:
            vit_init_linears(expert)
    return layer


def apply_soft_moe(model: nn.Module, moe_layer_index: LayerIndex, num_experts: int,
                   slots_per_expert: int = 1, *, normalize: bool = True, upcycle: bool = False,
                   expert_drop: Any = None, expert_impl: str = "batched") -> list[str]:
    """Make ``model.blocks[i].mlp`` a Soft-MoE layer for each block chosen by
    ``moe_layer_index``; returns the replaced module names.

    ``upcycle``: every expert starts as a copy of the block's dense MLP (GMoE's sparse
    upcycling; use after loading dense/pretrained weights), else experts get timm's ViT init
    (as bwconrad's experts, which timm initialises). Φ and ``scale`` always start fresh.
    ``expert_drop`` (None: the MLP's own) is the dropout after the expert activation.
    """
    if expert_impl not in EXPERT_IMPLS:
        raise ValueError(f"unknown expert_impl {expert_impl!r}; valid: {', '.join(EXPERT_IMPLS)}")
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise TypeError(f"{type(model).__name__} has no .blocks; expected a timm ViT")
    indices = soft_moe_block_indices(len(blocks), moe_layer_index)
    if expert_impl == "wrapper":
        for i in indices:
            blocks[i].mlp = _wrapper_layer(blocks[i].mlp, num_experts, slots_per_expert,
                                           normalize, upcycle, expert_drop)
        log.info("Soft-MoE (wrapper) in blocks %s, upcycle=%s", indices, upcycle)
        return [f"blocks.{i}.mlp" for i in indices]
    names = apply_moe(model, indices, upcycle=upcycle, vit_init_router=False,
                      num_experts=num_experts, router="soft", gate_noise=0.0,
                      expert_drop=None if expert_drop is None else float(expert_drop),
                      router_kwargs={"slots_per_expert": slots_per_expert,
                                     "normalize": normalize})
    if not upcycle:
        for i in indices:
            _timm_init_batched(blocks[i].mlp)
    return names


class SoftMoEVisionTransformer(VisionTransformer):
    """timm ``VisionTransformer`` whose MLPs in the ``moe_layer_index`` blocks are Soft-MoE
    layers (``num_experts`` x ``slots_per_expert`` slots, paper normalisation when
    ``normalize``). Every other keyword goes to timm's ``VisionTransformer`` (defaults as
    timm's: ViT-B/16 dims, 224 px). forward(x [B, C, H, W]) -> logits [B, num_classes].
    ``moe_layer_indices`` lists the Soft-MoE blocks.
    """

    def __init__(self, num_experts: int = 128, slots_per_expert: int = 1,
                 moe_layer_index: LayerIndex = 6, normalize: bool = True,
                 expert_impl: str = "batched", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_experts, self.slots_per_expert = int(num_experts), int(slots_per_expert)
        apply_soft_moe(self, moe_layer_index, self.num_experts, self.slots_per_expert,
                       normalize=normalize, upcycle=False, expert_impl=expert_impl)
        self.moe_layer_indices = soft_moe_block_indices(len(self.blocks), moe_layer_index)


def _cfg(**overrides: Any) -> dict[str, Any]:
    """A weightless timm pretrained cfg (input size, normalisation, layer names)."""
    return {"url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": None,
            "crop_pct": 0.9, "interpolation": "bicubic", "fixed_input_size": True,
            "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
            "first_conv": "patch_embed.proj", "classifier": "head", **overrides}


default_cfgs = generate_default_cfgs({name: _cfg() for name in PRESETS})


def _create(variant: str, pretrained: bool, **kwargs: Any) -> SoftMoEVisionTransformer:
    if pretrained:
        raise ValueError(f"no pretrained weights for {variant!r}: load a dense ViT and call "
                         "apply_soft_moe(model, ..., upcycle=True) instead")
    args = {**SOFT_MOE_DEFAULTS, **PRESETS[variant], **kwargs}
    return build_model_with_cfg(SoftMoEVisionTransformer, variant, False, **args)


@register_model
def soft_moe_vit_tiny(pretrained: bool = False, **kwargs: Any) -> SoftMoEVisionTransformer:
    """Soft MoE Ti/16: 192-d, 12 blocks, 3 heads, 128 experts x 1 slot in blocks 6-11."""
    return _create("soft_moe_vit_tiny", pretrained, **kwargs)


@register_model
def soft_moe_vit_small(pretrained: bool = False, **kwargs: Any) -> SoftMoEVisionTransformer:
    """Soft MoE S/16: 384-d, 12 blocks, 6 heads, 128 experts x 1 slot in blocks 6-11."""
    return _create("soft_moe_vit_small", pretrained, **kwargs)


@register_model
def soft_moe_vit_base(pretrained: bool = False, **kwargs: Any) -> SoftMoEVisionTransformer:
    """Soft MoE B/16: 768-d, 12 blocks, 12 heads, 128 experts x 1 slot in blocks 6-11."""
    return _create("soft_moe_vit_base", pretrained, **kwargs)


@register_model
def soft_moe_vit_large(pretrained: bool = False, **kwargs: Any) -> SoftMoEVisionTransformer:
    """Soft MoE L/16: 1024-d, 24 blocks, 16 heads, 128 experts x 1 slot in blocks 12-23."""
    return _create("soft_moe_vit_large", pretrained, **kwargs)


@register_model
def soft_moe_vit_huge(pretrained: bool = False, **kwargs: Any) -> SoftMoEVisionTransformer:
    """Soft MoE H/16 (paper: H/14, pass patch_size=14): 1280-d, 32 blocks, 16 heads,
    128 experts x 1 slot in blocks 16-31."""
    return _create("soft_moe_vit_huge", pretrained, **kwargs)
