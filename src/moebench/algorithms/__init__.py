"""DomainBed-style algorithms (ALGORITHMS registry): ``erm`` (dense ViT) and ``gmoe``."""
from __future__ import annotations

from moebench.algorithms.base import (
    Algorithm,
    HparamsError,
    check_hparams,
    concat_minibatches,
)
from moebench.algorithms.erm import ERM, make_adam
from moebench.algorithms.gmoe import GMoE, build_moe_network, moe_layer_kwargs
from moebench.algorithms.mass import MASS  # noqa: F401  (registers "mass")
from moebench.algorithms.mode import MoDE  # noqa: F401  (registers "mode")
from moebench.algorithms.soft_moe import SoftMoE  # noqa: F401  (registers "soft_moe")
from moebench.registry import ALGORITHMS

__all__ = [
    "ALGORITHMS", "Algorithm", "ERM", "GMoE", "HparamsError", "build_moe_network",
    "check_hparams", "concat_minibatches", "make_adam", "moe_layer_kwargs",
]
