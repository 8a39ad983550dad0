"""A Tutel-compatible front: ``moe_layer(gate_type=..., model_dim=..., experts=...)``.

Maps Tutel's constructor (spec mass_mode_mos_tutel §4.1) onto :class:`MoELayer`. Single
process only: ``group``, ``parallel_type``, ``use_2dh`` and ``a2a_ffn_overlap_degree`` are
accepted and have no effect. ``backend="tutel"`` delegates to the real ``tutel`` package.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moebench.moe.layer import MoELayer

log = logging.getLogger(__name__)

_GATES = {"top": "topk", "cosine_top": "cosine_topk", "mintau": "mintau", "mass": "mintau"}
_GATE_EXTRA = {"top": (), "cosine_top": ("proj_dim", "init_t"), "mintau": ("tau",),
               "mass": ("tau",)}
_GATE_COMMON = ("type", "k", "capacity_factor", "gate_noise", "fp32_gate")
_EXPERT_KEYS = ("type", "count_per_node", "num_experts_per_device", "hidden_size_per_expert",
                "activation_fn", "output_dim", "has_fc1_bias", "has_fc2_bias",
                "implicit_dropout_p")


class TutelMoELayer(MoELayer):
    """MoELayer with Tutel's forward signature; the output tensor carries ``.l_aux``
    (GShard loss if ``is_gshard_loss`` else importance+load), also kept as ``self.l_aux``."""

    def __init__(self, *args: Any, is_gshard_loss: bool = True,
                 result_func: Optional[Callable] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.is_gshard_loss = is_gshard_loss
        self.result_func = result_func
        self.l_aux: Optional[Tensor] = None

    @property
    def num_global_experts(self) -> int:
        return self.num_experts

    @property
    def num_local_experts(self) -> int:
        return self.num_experts

    def forward(self, input: Tensor, gate_index: int = 0, capacity_factor: Optional[float] = None,
                top_k: Optional[int] = None, a2a_ffn_overlap_degree: Optional[int] = None,
                reserve_dims: int = 1, inequivalent_tokens: bool = False,
                adaptive_r: Optional[int] = None, megablocks_size: int = 0) -> Any:
        """input [..., model_dim] -> y [..., out] with ``y.l_aux`` (or ``result_func(y)``).

        As Tutel, ``capacity_factor or gate.capacity_factor``: passing 0 here falls back to
        the gate's factor; ``top_k`` overrides the gate's k for this call.
        """
        if gate_index != 0 or reserve_dims != 1:
            raise ValueError(f"only gate_index=0 and reserve_dims=1 are supported, got "
                             f"gate_index={gate_index}, reserve_dims={reserve_dims}")
        old_k = getattr(self.router, "k", None)
        if top_k and old_k is not None:
            self.router.k = min(int(top_k), self.num_experts)
        try:
            y = super().forward(input, capacity_factor=capacity_factor or None)
        finally:
            if old_k is not None:
                self.router.k = old_k
        key = "gshard" if self.is_gshard_loss else "importance_load"
        self.l_aux = self.aux_losses.get(key, y.new_zeros((), dtype=torch.float32))
        y.l_aux = self.l_aux
        return self.result_func(y) if self.result_func is not None else y


def _check_keys(what: str, given: dict, allowed: Sequence[str]) -> None:
    for key in given:
        if key not in allowed:
            raise ValueError(f"unknown {what} option {key!r}; valid: {', '.join(allowed)}")


def _gate_args(gate_type: Union[dict, str, list]) -> tuple[str, dict, dict]:
    """Tutel gate dict -> (router name, MoELayer kwargs, router kwargs)."""
    if isinstance(gate_type, (list, tuple)):
        if len(gate_type) != 1:
            raise ValueError(f"only one gate is supported, got {len(gate_type)}")
        gate_type = gate_type[0]
    if isinstance(gate_type, str):                       # legacy 'Top2Gate'
        if not (gate_type.startswith("Top") and gate_type.endswith("Gate")):
            raise ValueError(f"unknown gate_type {gate_type!r}")
        log.warning("gate_type %r is deprecated; use {'type': 'top', 'k': ...}", gate_type)
        gate_type = {"type": "top", "k": int(gate_type[3:-4])}
    kind = gate_type.get("type")
    if kind not in _GATES:
        raise ValueError(f"unknown gate type {kind!r}; valid: {', '.join(_GATES)}")
    _check_keys("gate", gate_type, _GATE_COMMON + _GATE_EXTRA[kind])
    layer_kw = {"k": int(gate_type.get("k", 1)),
                "capacity_factor": float(gate_type.get(
                    "capacity_factor", os.environ.get("CAP_FACTOR", 1.0))),
                "gate_noise": float(gate_type.get("gate_noise", 0.0))}
    router_kw = {key: gate_type[key] for key in _GATE_EXTRA[kind] if key in gate_type}
    return _GATES[kind], layer_kw, router_kw


def _expert_args(experts: dict, model_dim: int) -> dict:
    """Tutel experts dict ({'type': 'ffn', ...}) -> MoELayer kwargs. ``implicit_dropout_p``
    drops after the activation (inside each expert) and on the combined output."""
    if not isinstance(experts, dict) or experts.get("type") != "ffn":
        raise ValueError(f"only experts={{'type': 'ffn', ...}} is supported, got {experts!r}")
    _check_keys("experts", experts, _EXPERT_KEYS)
    count = experts.get("num_experts_per_device", experts.get("count_per_node", 1))
    if int(count) < 1:
        raise ValueError(f"num_experts_per_device must be >= 1 here (no sharding), got {count}")
    dropout = float(experts.get("implicit_dropout_p", 0.0))
    return {"hidden_features": int(experts["hidden_size_per_expert"]),
            "out_features": int(experts.get("output_dim", model_dim)),
            "act_layer": experts.get("activation_fn", F.relu),
            "bias": (bool(experts.get("has_fc1_bias", True)),
                     bool(experts.get("has_fc2_bias", True))),
            "num_experts": int(count), "expert_drop": dropout, "drop": (0.0, dropout)}


def moe_layer(gate_type: Union[dict, str, list], model_dim: int, experts: dict,
              scan_expert_func: Optional[Callable[[str, nn.Parameter], Any]] = None,
              result_func: Optional[Callable] = None, group: Any = None,
              seeds: Optional[Sequence[Optional[int]]] = None, a2a_ffn_overlap_degree: int = 1,
              is_postscore: bool = True, batch_prioritized_routing: bool = False,
              normalize_gate: bool = True, is_gshard_loss: bool = True,
              parallel_type: str = "adaptive:1", use_2dh: bool = False, *,
              backend: str = "moebench", device=None, dtype=None) -> nn.Module:
    """Build a Tutel-style MoE layer. Gate types: 'top' (router "topk"), 'cosine_top'
    ("cosine_topk"), 'mintau'/'mass' ("mintau"). forward(x [..., model_dim]) returns a
    tensor with ``.l_aux``. ``backend='tutel'`` returns ``tutel.moe.moe_layer(...)``.
    """
    if backend == "tutel":
        return _tutel_backend(**{k: v for k, v in locals().items()
                                 if k not in ("backend", "device", "dtype")})
    if backend != "moebench":
        raise ValueError(f"unknown backend {backend!r}; valid: moebench, tutel")
    router, layer_kw, router_kw = _gate_args(gate_type)
    if normalize_gate is False and router != "mintau":
        router_kw["normalize_gate"] = False
    expert_kw = _expert_args(experts, model_dim)
    if seeds is not None and seeds[0] is not None:
        torch.manual_seed(seeds[0])
    layer = TutelMoELayer(model_dim, **expert_kw, **layer_kw, router=router,
                          router_kwargs=router_kw, batch_prioritized=batch_prioritized_routing,
                          postscore=is_postscore, is_gshard_loss=is_gshard_loss,
                          result_func=result_func, device=device, dtype=dtype)
    if seeds is not None and len(seeds) > 1 and seeds[1] is not None:
        torch.manual_seed(seeds[1])
        layer.experts.reset_parameters()
    if seeds is not None and len(seeds) > 2 and seeds[2] is not None:
        torch.manual_seed(seeds[2])
    for name, param in layer.experts.named_parameters():
        param._tutel_expert = True
        if scan_expert_func is not None:
            scan_expert_func(name, param)
    return layer


def tutel_available() -> bool:
    """True when the real ``tutel`` package can be imported."""
    try:
        import tutel.moe  # noqa: F401
    except Exception:  # ImportError, or its JIT kernels failing to load
        return False
    return True


def _tutel_backend(**kwargs: Any) -> nn.Module:
    try:
        from tutel import moe as tutel_moe
    except ImportError as err:
        raise ImportError("backend='tutel' needs the tutel package "
                          "(pip install git+https://github.com/microsoft/tutel)") from err
    return tutel_moe.moe_layer(**kwargs)
