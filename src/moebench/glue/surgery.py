"""MoE surgery on transformers BERT-family encoders (no transformers code copied or patched).

A BERT layer computes ``LayerNorm(output.dropout(output.dense(intermediate(x))) + x)`` with
``intermediate = act(dense(x))``. The MASS authors (psmiz/MASS ``moe_utils_mass.bert_to_MoE``)
replace that feed-forward chunk by ``LayerNorm(output.dropout(moe(x)) + x)``. We get exactly
this by swapping two submodules: ``layer.intermediate = BertMoEFFN(...)`` (d -> d, the whole
FFN routed over experts) and ``layer.output.dense = nn.Identity()``; the layer's forward,
dropout and LayerNorm stay transformers' own.

Experts are upcycled as full copies of the pretrained FFN (the authors' ``--expert_repeat 16``
turns their MoEfication split into full copies). The authors' quirks, each a switch that
defaults to their behaviour:

* ``fc2_bias="divide"``: every expert's fc2 bias is divided by the layer's number of expert
  slots (their max expert count, 16): with combine weights summing to 1 the converted layer
  then adds only 1/16 of the pretrained bias. ``"keep"`` keeps the full bias.
* ``expert_dropout=0.1``: each expert computes ``fc2(GELU(Dropout(fc1 x)))``, a dropout before
  the activation that dense BERT does not have (their ``--moe_drop``; the core's experts with
  ``drop_first``, on its fused path). 0 removes it.
* ``route_padding=True``: padding tokens are routed like real ones (the attention mask never
  reaches their FFN) and count in the routing stats and in the capacity. False routes only
  real tokens; padding positions then get a zero FFN output.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn

from moebench.io import atomic_write
from moebench.moe import MoELayer

FC2_BIAS_MODES = ("divide", "keep")
_ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh",
                "gelu_fast": "tanh"}


@dataclass(frozen=True)
class MoESpec:
    """Which encoder layers become MoE and how (see the module docstring).

    ``num_experts``: expert slots per layer; ``router``: "mintau" or "cosine_topk" (any
    ``moebench.moe`` router); ``router_kwargs``: e.g. ``{"tau": 0.5, "num_active": 8}``.
    """

    layers: tuple[int, ...]
    num_experts: int
    router: str
    k: int = 1
    capacity_factor: float = 0.0
    gate_noise: float = 0.0
    batch_prioritized: bool = True
    router_kwargs: Mapping[str, Any] = field(default_factory=dict)
    fc2_bias: str = "divide"
    expert_dropout: float = 0.1
    route_padding: bool = True

    def __post_init__(self) -> None:
        if self.fc2_bias not in FC2_BIAS_MODES:
            raise ValueError(f"fc2_bias must be one of {FC2_BIAS_MODES}, got {self.fc2_bias!r}")
        if not 0.0 <= self.expert_dropout < 1.0:
            raise ValueError(f"expert_dropout must be in [0, 1), got {self.expert_dropout}")
        object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"], d["router_kwargs"] = list(self.layers), dict(self.router_kwargs)
        return d


class BertMoEFFN(nn.Module):
    """The routed FFN of one BERT layer: x [B, L, D] -> [B, L, D] (``moe`` does the work).

    ``token_mask`` ([B, L] bool, set by the caller before each forward) is used only when
    ``route_padding`` is False: then only its True positions are routed.
    """

    def __init__(self, moe: MoELayer, route_padding: bool = True) -> None:
        super().__init__()
        self.moe = moe
        self.route_padding = bool(route_padding)
        self.token_mask: Optional[Tensor] = None

    def forward(self, x: Tensor) -> Tensor:
        mask = self.token_mask
        if self.route_padding or mask is None:
            return self.moe(x)
        if mask.shape != x.shape[:-1]:
            raise ValueError(f"token_mask {tuple(mask.shape)} does not match x {tuple(x.shape)}")
        out = x.new_zeros(x.shape)
        out[mask] = self.moe(x[mask])
        return out


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's layer list of a transformers BERT-family model (BertModel, ...For...)."""
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no encoder.layer list (not a BERT-family "
                         "encoder)")
    return layers


def _activation(model: nn.Module, dropout: float) -> nn.Module:
    act = getattr(model.config, "hidden_act", "gelu")
    if act in _ACTIVATIONS:
        return nn.GELU(approximate=_ACTIVATIONS[act])
    if dropout > 0:
        raise ValueError(f"expert_dropout before the activation needs a GELU model, got {act!r}")
    known = {"relu": nn.ReLU, "silu": nn.SiLU, "swish": nn.SiLU}
    if act not in known:
        raise ValueError(f"unsupported hidden_act {act!r} for MoE surgery")
    return known[act]()


def moe_ffn(model: nn.Module, layer: nn.Module, spec: MoESpec, upcycle: bool = True) -> BertMoEFFN:
    """The MoE FFN replacing ``layer``'s intermediate + output dense (experts copied from it
    when ``upcycle``; fc2 bias divided by the slot count under ``fc2_bias="divide"``)."""
    fc1, fc2 = layer.intermediate.dense, layer.output.dense
    moe = MoELayer(fc1.in_features, fc1.out_features, fc2.out_features,
                   act_layer=_activation(model, spec.expert_dropout), bias=True, drop=0.0,
                   num_experts=spec.num_experts, router=spec.router, k=spec.k,
                   capacity_factor=spec.capacity_factor, gate_noise=spec.gate_noise,
                   batch_prioritized=spec.batch_prioritized,
                   router_kwargs=dict(spec.router_kwargs),
                   device=fc1.weight.device, dtype=fc1.weight.dtype)
    if spec.expert_dropout > 0:     # the authors' experts: GELU(Dropout(fc1 x)), fused path
        moe.experts.drop = nn.Dropout(spec.expert_dropout)
        moe.experts.drop_first = True
    if upcycle:
        moe.experts.load_dense(fc1, fc2)
        if spec.fc2_bias == "divide":
            with torch.no_grad():
                moe.experts.fc2_bias.div_(spec.num_experts)
    return BertMoEFFN(moe, spec.route_padding)


def apply_moe(model: nn.Module, spec: MoESpec, upcycle: bool = True) -> nn.Module:
    """Convert ``spec.layers`` of ``model`` in place (``layer.intermediate`` = MoE FFN,
    ``layer.output.dense`` = Identity); returns ``model``. Layer indices are 0-based and may
    be negative (from the top)."""
    layers = encoder_layers(model)
    n = len(layers)
    for i in spec.layers:
        if not -n <= i < n:
            raise ValueError(f"MoE layer index {i} out of range for an encoder of {n} layers")
        layer = layers[i]
        if isinstance(layer.intermediate, BertMoEFFN):
            raise ValueError(f"encoder layer {i} is already an MoE layer")
        layer.intermediate = moe_ffn(model, layer, spec, upcycle)
        layer.output.dense = nn.Identity()
    model.moe_spec = spec
    return model


def moe_ffns(model: nn.Module) -> list[BertMoEFFN]:
    """Every converted FFN of ``model``, in layer order."""
    return [m for m in model.modules() if isinstance(m, BertMoEFFN)]


def set_token_mask(model: nn.Module, mask: Optional[Tensor]) -> None:
    """Hand the [B, L] attention mask (True = real token) to every MoE FFN of ``model``."""
    for ffn in moe_ffns(model):
        ffn.token_mask = None if mask is None else mask.bool()


def save_converted(model: nn.Module, path: str | Path) -> Path:
    """Write config, MoE spec and state dict of a converted model to one file (atomic)."""
    spec = getattr(model, "moe_spec", None)
    payload = {"config": model.config.to_dict(), "architecture": type(model).__name__,
               "moe_spec": None if spec is None else spec.to_dict(),
               "state_dict": model.state_dict()}
    return atomic_write(path, lambda fh: torch.save(payload, fh))


def load_converted(path: str | Path) -> nn.Module:
    """Rebuild a model written by :func:`save_converted` (strict state-dict load)."""
    import transformers

    payload = torch.load(path, map_location="cpu", weights_only=False)
    cfg = dict(payload["config"])
    config = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    model = getattr(transformers, payload["architecture"])(config)
    if payload["moe_spec"] is not None:
        apply_moe(model, MoESpec(**payload["moe_spec"]), upcycle=False)
    model.load_state_dict(payload["state_dict"], strict=True)
    return model
