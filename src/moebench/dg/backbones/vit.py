"""timm VisionTransformer backbones (BACKBONES registry) and pretrained-weight loading.

A builder is ``builder(hparams, input_shape, num_classes) -> VisionTransformer`` (dense; MoE
surgery is applied afterwards by :func:`moebench.dg.backbones.apply_moe`). ``hparams['pretrained']``:

* ``None``  -> random init (timm's ViT init);
* ``"timm"`` -> timm hub weights (``pretrained=True``; needs network or a filled HF cache);
* a path    -> a local state dict (``.pth``/``.pt``/``.bin`` via ``torch.load``, or
  ``.safetensors``), also DeiT-style ``{"model": sd}``; the classifier head is dropped (fresh head),
  positional embeddings / patch embedding are resampled by timm to the model's grid.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import timm
import torch
from timm.models import adapt_input_conv
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from moebench.errors import DataError, ParamsError
from moebench.registry import BACKBONES

log = logging.getLogger(__name__)

HEAD_PREFIXES = ("head.", "head_dist.", "fc_norm_head.")
DEIT_SMALL_DIMS = {"patch_size": 16, "embed_dim": 384, "depth": 12, "num_heads": 6,
                   "mlp_ratio": 4.0}


class PretrainedLoadError(DataError):
    """A pretrained checkpoint could not be read or does not fit the model."""


def _image_size(input_shape: tuple[int, ...]) -> tuple[int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
    return int(input_shape[1]), int(input_shape[2])


@BACKBONES.register("vit_digits")
def vit_digits(hparams: Mapping[str, Any], input_shape: tuple[int, int, int],
               num_classes: int) -> VisionTransformer:
    """A small from-scratch ViT sized by hparams (patch_size, embed_dim, depth, num_heads,
    mlp_ratio, drop_path_rate) for inputs [B, C, H, W] -> logits [B, num_classes]."""
    if hparams.get("pretrained") == "timm":
        raise ParamsError("pretrained='timm' has no hub weights for backbone 'vit_digits'; "
                         "use null or a local checkpoint path")
    size, patch = _image_size(input_shape), int(hparams["patch_size"])
    if size[0] % patch or size[1] % patch:
        raise ParamsError(f"hparam patch_size={patch} does not divide the image size {size}")
    if int(hparams["embed_dim"]) % int(hparams["num_heads"]):
        raise ParamsError(f"hparam embed_dim={hparams['embed_dim']} is not divisible by "
                         f"num_heads={hparams['num_heads']}")
    model = VisionTransformer(
        img_size=size, patch_size=int(hparams["patch_size"]),
        in_chans=int(input_shape[0]), num_classes=int(num_classes),
        embed_dim=int(hparams["embed_dim"]), depth=int(hparams["depth"]),
        num_heads=int(hparams["num_heads"]), mlp_ratio=float(hparams["mlp_ratio"]),
        drop_path_rate=float(hparams["drop_path_rate"]), class_token=True,
        global_pool="token")
    return _maybe_load_file(model, hparams.get("pretrained"))


@BACKBONES.register("deit_small_patch16_224")
def deit_small_patch16_224(hparams: Mapping[str, Any], input_shape: tuple[int, int, int],
                           num_classes: int) -> VisionTransformer:
    """timm DeiT-S/16 (384-d, 12 blocks, 6 heads) for [B, C, H, W] -> [B, num_classes]."""
    for key, value in DEIT_SMALL_DIMS.items():
        if key in hparams and float(hparams[key]) != float(value):
            raise ParamsError(f"hparam {key}={hparams[key]!r} conflicts with backbone "
                             f"deit_small_patch16_224 ({key}={value})")
    from_hub = hparams.get("pretrained") == "timm"
    try:
        model = timm.create_model(
            "deit_small_patch16_224", pretrained=from_hub, num_classes=int(num_classes),
            drop_path_rate=float(hparams["drop_path_rate"]), img_size=_image_size(input_shape),
            in_chans=int(input_shape[0]))
    except Exception as exc:  # noqa: BLE001 - hub/network failures -> one line
        if not from_hub:
            raise
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise PretrainedLoadError("cannot fetch timm hub weights for deit_small_patch16_224 "
                                  f"(offline? use a local checkpoint path): {reason}") from None
    return _maybe_load_file(model, hparams.get("pretrained"))


def build_backbone(hparams: Mapping[str, Any], input_shape: tuple[int, int, int],
                   num_classes: int) -> nn.Module:
    """Build ``BACKBONES[hparams['backbone']]`` (dense, pretrained weights loaded if asked)."""
    return BACKBONES.get(hparams["backbone"])(hparams, tuple(input_shape), num_classes)


def _maybe_load_file(model: VisionTransformer, pretrained: Any) -> VisionTransformer:
    if pretrained is None or pretrained == "timm":
        return model
    if not isinstance(pretrained, (str, Path)):
        raise ParamsError(f"hparam pretrained must be null, 'timm' or a file path, "
                         f"got {pretrained!r}")
    load_pretrained_file(model, Path(pretrained))
    return model


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}``; unwraps ``model``/``state_dict``."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedLoadError(f"pretrained checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes one line naming the file
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise PretrainedLoadError(f"cannot read pretrained checkpoint {path}: {reason}") from None
    for key in ("model", "state_dict", "model_state"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PretrainedLoadError(f"pretrained checkpoint {path} is not a state dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def _fit_to_model(state: dict[str, torch.Tensor], model: VisionTransformer
                  ) -> dict[str, torch.Tensor]:
    """Drop the classifier head, resample pos/patch embeddings, adapt the input channels."""
    state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
    state = checkpoint_filter_fn(state, model)
    key = "patch_embed.proj.weight"
    in_chans = model.patch_embed.proj.weight.shape[1]
    if key in state and state[key].shape[1] != in_chans:
        state[key] = adapt_input_conv(in_chans, state[key])
    return state


def load_pretrained_file(model: VisionTransformer, path: Path) -> None:
    """Load a local dense ViT/DeiT checkpoint into ``model`` (a dense timm ViT); fresh head.

    Every non-head parameter of ``model`` must be present and fit; otherwise a one-line
    :class:`PretrainedLoadError` names the file and the first offending keys.
    """
    state = _fit_to_model(read_state_dict(path), model)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        reason = " ".join(str(exc).split())[:300]
        raise PretrainedLoadError(f"pretrained checkpoint {path} does not fit: {reason}") from None
    missing = [k for k in result.missing_keys if not k.startswith(HEAD_PREFIXES)]
    if missing or result.unexpected_keys:
        raise PretrainedLoadError(
            f"pretrained checkpoint {path} does not fit the model: missing {missing[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}")
    log.info("loaded pretrained weights from %s (head re-initialised)", path)
