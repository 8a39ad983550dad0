"""Backbones (BACKBONES registry: timm ViTs) and MoE surgery on them."""
from __future__ import annotations

from moebench.dg.backbones.surgery import apply_moe, moe_block_indices
from moebench.dg.backbones.vit import (
    PretrainedLoadError,
    build_backbone,
    deit_small_patch16_224,
    load_pretrained_file,
    read_state_dict,
    vit_digits,
)
from moebench.registry import BACKBONES

__all__ = [
    "BACKBONES", "PretrainedLoadError", "apply_moe", "build_backbone",
    "deit_small_patch16_224", "load_pretrained_file", "moe_block_indices", "read_state_dict",
    "vit_digits",
]
