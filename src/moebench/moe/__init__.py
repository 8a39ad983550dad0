"""MoE core: routers (ROUTERS registry), sort-once dispatch, batched experts, losses,
the timm-compatible :class:`MoELayer` and the Tutel-compatible :func:`moe_layer`."""
from moebench.moe import losses
from moebench.moe.routers import RouterResult, SoftRouterResult
from moebench.moe.layer import MoELayer, aux_loss_sum, collect_routing_stats
from moebench.moe.tutel_front import TutelMoELayer, moe_layer, tutel_available

__all__ = ["MoELayer", "aux_loss_sum", "collect_routing_stats", "moe_layer", "TutelMoELayer",
           "tutel_available", "RouterResult", "SoftRouterResult", "losses"]
