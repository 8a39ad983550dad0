"""Routers, registered in ``moebench.registry.ROUTERS`` on import (one file each)."""
from moebench.moe.routers.base import Router, RouterResult, SoftRouterResult, TopKRouterBase
from moebench.moe.routers.topk import TopKRouter
from moebench.moe.routers.cosine_topk import CosineTopKRouter
from moebench.moe.routers.mintau import MinTauRouter
from moebench.moe.routers.soft import SoftRouter

__all__ = ["Router", "RouterResult", "SoftRouterResult", "TopKRouterBase", "TopKRouter",
           "CosineTopKRouter", "MinTauRouter", "SoftRouter"]
