"""Attention maps of a trained ViT (the SF-MoE README's visualisation) and the model file.

:func:`cls_attention` runs the model once with a forward hook on one block's
``attn.qkv`` (timm's :class:`timm.layers.Attention`) and computes, from that block's own
projections and q/k norms, ``softmax(q k^T * scale)`` — the attention the block applies
(timm's fused kernel never materialises it). The class token's row, restricted to the
patch tokens and renormalised, reshaped to the patch grid, is the attention map.

The trainer deletes its resume checkpoint when a run is done; a run to visualise keeps
``model.pt``: either the trainer's ``--save-model`` file (the network's state dict; the
network is rebuilt from the run's ``spec.json`` next to it) or a :func:`save_model_file` file
(the pickled network plus meta; also fits networks whose shape changed while training).
:func:`load_model_file` reads both.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from timm.layers import Attention
from torch import Tensor, nn

from moebench.errors import DataError
from moebench.io import atomic_write

logger = logging.getLogger(__name__)

MODEL_FORMAT = "moebench-model/1"
REQUIRED_META = ("algorithm", "dataset", "test_envs")


def _last_attention(model: nn.Module, block: int) -> Attention:
    blocks = getattr(model, "blocks", None)
    if blocks is None or len(blocks) == 0:
        raise DataError(f"model {type(model).__name__} has no 'blocks' (not a timm ViT)")
    attn = getattr(blocks[block], "attn", None)
    if not isinstance(attn, Attention):
        raise DataError(f"block {block} has no timm Attention 'attn' module "
                         f"(got {type(attn).__name__})")
    return attn


@torch.no_grad()
def cls_attention(model: nn.Module, images: Tensor, block: int = -1) -> Tensor:
    """Class-token attention of one block: images [B, C, H, W] -> [B, heads, N] (N tokens,
    class token first; each row sums to 1). The model is put in eval mode."""
    if getattr(model, "cls_token", None) is None:
        raise DataError("model has no class token; CLS attention is undefined")
    attn = _last_attention(model, block)
    captured: list[Tensor] = []
    handle = attn.qkv.register_forward_hook(lambda _m, _i, out: captured.append(out))
    was_training = model.training
    model.eval()
    try:
        model(images)
    finally:
        handle.remove()
        model.train(was_training)
    qkv = captured[-1]
    b, n, _ = qkv.shape
    q, k, _v = qkv.reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    weights = ((q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    return weights[:, :, 0].float()  # [B, heads, N]


def attention_maps(model: nn.Module, images: Tensor, block: int = -1) -> Tensor:
    """Per-head class-token attention over the patches: [B, C, H, W] -> [B, heads, H', W']
    (H' x W' = patch grid), renormalised so each map sums to 1."""
    cls = cls_attention(model, images, block)
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    grid = tuple(int(g) for g in model.patch_embed.grid_size)
    patches = cls[:, :, prefix:]
    if patches.shape[-1] != grid[0] * grid[1]:
        raise DataError(f"{patches.shape[-1]} patch tokens do not fill the grid {grid}")
    patches = patches / patches.sum(dim=-1, keepdim=True)
    return patches.reshape(*patches.shape[:2], *grid)


def save_model_file(network: nn.Module, path: str | os.PathLike[str],
                    meta: Mapping[str, Any]) -> Path:
    """Save a trained network (pickled module, so MoE layers that grew keep their shape) and
    its ``meta`` (at least algorithm, dataset, test_envs; JSON-like values) atomically.
    :func:`load_model_file` maps it to the CPU."""
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise DataError(f"model meta lacks {missing[0]!r} (needs {', '.join(REQUIRED_META)})")
    payload = {"format": MODEL_FORMAT, "meta": dict(meta), "network": network}
    return atomic_write(path, lambda fh: torch.save(payload, fh))


def _read_payload(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"model file not found: {path} (train that run with "
                                "--save-model; a run already done must be trained again)")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear line
        raise DataError(f"cannot read model file {path}: {exc}") from None


def _is_state_dict(payload: Any) -> bool:
    return isinstance(payload, Mapping) and bool(payload) and all(
        isinstance(v, Tensor) for v in payload.values())


def model_meta(path: str | os.PathLike[str], payload: Any = None) -> dict[str, Any]:
    """Meta of a model file: its own (``save_model_file``) or, for a bare state dict (the
    trainer's ``--save-model``), the run's ``spec.json`` next to it."""
    path = Path(path)
    payload = _read_payload(path) if payload is None else payload
    if isinstance(payload, Mapping) and payload.get("format") == MODEL_FORMAT:
        return dict(payload["meta"])
    if not _is_state_dict(payload):
        raise DataError(f"{path} is neither a {MODEL_FORMAT} file nor a state dict")
    spec = path.parent / "spec.json"
    if not spec.is_file():
        raise DataError(f"state-dict model {path} needs the run's spec.json next to it")
    return json.loads(spec.read_text(encoding="utf-8"))


def rebuild_network(meta: Mapping[str, Any], state: Mapping[str, Tensor], dataset: Any) -> nn.Module:
    """The run's network rebuilt from its spec (``pretrained`` off: the weights come from
    ``state``) with ``state`` loaded strictly (a MASS network that grew experts does not fit:
    save it with :func:`save_model_file` instead)."""
    from moebench.dg.algorithms import algorithm_class

    hparams = {**meta["hparams"], "pretrained": None}
    n_domains = len(dataset.envs) - len(meta["test_envs"])
    algorithm = algorithm_class(str(meta["algorithm"]), meta.get("plugins", ()))(
        dataset.input_shape, dataset.num_classes, n_domains, hparams, n_steps=int(meta.get("steps", 1)))
    network = getattr(algorithm, "network", algorithm)
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DataError(f"model state does not fit the rebuilt {meta['algorithm']} network: {first}") from None
    return network


def _network(path: Path, payload: Any, meta: Mapping[str, Any], dataset: Any) -> nn.Module:
    if _is_state_dict(payload):
        if dataset is None:
            raise DataError(f"state-dict model {path}: the dataset is needed to rebuild it")
        return rebuild_network(meta, payload, dataset).eval()
    return payload["network"].eval()


def load_model_file(path: str | os.PathLike[str], dataset: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """(network in eval mode, meta) of a :func:`save_model_file` file, or of a bare state dict
    plus its run's ``spec.json`` (needs ``dataset`` for input shape and classes). The file
    is a trusted, locally written pickle."""
    path = Path(path)
    payload = _read_payload(path)
    meta = model_meta(path, payload)
    return _network(path, payload, meta, dataset), meta


def sample_images(env: torch.utils.data.Dataset, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` examples of one environment in a seeded order -> (x [n, C, H, W], y [n])."""
    if n < 1:
        raise DataError(f"need at least one image, got n={n}")
    order = np.random.RandomState(seed).permutation(len(env))[:n]
    xs, ys = zip(*(env[int(i)] for i in order))
    return torch.stack(list(xs)), torch.as_tensor([int(y) for y in ys])


def to_rgb(image: Tensor) -> np.ndarray:
    """[C, H, W] -> [H, W, 3] in [0, 1] for display (1 channel grey; 2 channels red/green as
    ColoredMNIST; first 3 otherwise), min-max scaled."""
    x = image.detach().float().cpu()
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    elif x.shape[0] == 2:
        x = torch.cat([x, torch.zeros_like(x[:1])])
    x = x[:3].permute(1, 2, 0).numpy()
    low, high = float(x.min()), float(x.max())
    return (x - low) / (high - low) if high > low else np.zeros_like(x)


def attention_frame(maps: Tensor, labels: Sequence[int]) -> pd.DataFrame:
    """Long table ``image, label, head, row, col, weight`` of maps [B, heads, H', W']; head
    ``mean`` is the average over heads."""
    m = maps.detach().cpu().numpy()
    rows = []
    for b in range(m.shape[0]):
        heads = [(str(h), m[b, h]) for h in range(m.shape[1])] + [("mean", m[b].mean(axis=0))]
        for head, grid in heads:
            for (r, c), w in np.ndenumerate(grid):
                rows.append({"image": b, "label": int(labels[b]), "head": head, "row": r,
                             "col": c, "weight": round(float(w), 6)})
    return pd.DataFrame(rows, columns=["image", "label", "head", "row", "col", "weight"])


def attention_figure(images: Tensor, labels: Sequence[int], maps: Tensor, title: str) -> Figure:
    """Rows = images; columns = input, each head's map and the head mean over the input
    (maps [B, heads, H', W'] upsampled to the image; one colour scale, one colour bar)."""
    b, heads = maps.shape[:2]
    cols = heads + 2
    fig = Figure(figsize=(1.6 * cols, 1.7 * b + 0.6), layout="constrained")
    h, w = images.shape[-2:]
    vmax = float(maps.max())  # one colour scale for every panel
    shown = None
    for i in range(b):
        rgb = to_rgb(images[i])
        panels = [("input", None)] + [(f"head {j}", maps[i, j]) for j in range(heads)]
        panels.append(("mean of heads", maps[i].mean(dim=0)))
        for j, (name, amap) in enumerate(panels):
            ax = fig.add_subplot(b, cols, i * cols + j + 1)
            ax.imshow(rgb if amap is None else rgb.mean(axis=2), cmap="gray",
                      extent=(0, w, h, 0), interpolation="nearest")
            if amap is not None:
                shown = ax.imshow(amap.cpu().numpy(), cmap="inferno", alpha=0.6, vmin=0.0,
                                  vmax=vmax, extent=(0, w, h, 0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
            if j == 0:
                ax.set_ylabel(f"label {int(labels[i])}", fontsize=8)
    fig.colorbar(shown, ax=fig.axes, shrink=0.6, label="attention weight (patches sum to 1)")
    fig.suptitle(title, fontsize=9)
    return fig


def write_attention(model_path: str | os.PathLike[str], data_path: str | os.PathLike[str],
                    out_dir: str | os.PathLike[str], *, n_images: int = 4, env: int | None = None,
                    seed: int = 0, stem: str | None = None) -> list[Path]:
    """Attention maps of a saved model on ``n_images`` of its test environment (or ``env``):
    writes ``<stem>.png/.pdf/.csv`` (default stem ``attention_<dataset>_<algorithm>``)."""
    from moebench.dg.datasets import load_dataset
    from moebench.dg.reporting.figures import save_figure
    from moebench.dg.reporting.render import slug

    payload = _read_payload(Path(model_path))
    meta = model_meta(model_path, payload)
    dataset = load_dataset(str(meta["dataset"]), Path(data_path))
    model = _network(Path(model_path), payload, meta, dataset)
    env = int(meta["test_envs"][0]) if env is None else int(env)
    if not 0 <= env < len(dataset.envs):
        raise DataError(f"env {env} out of range for {meta['dataset']} ({len(dataset.envs)} envs)")
    images, labels = sample_images(dataset.envs[env], n_images, seed)
    maps = attention_maps(model, images)
    label = dataset.environments[env]
    title = (f"{meta['algorithm']} on {meta['dataset']}: last-block CLS attention per head, "
             f"images from domain {label} (test envs {list(meta['test_envs'])})")
    fig = attention_figure(images, labels.tolist(), maps, title)
    stem = stem or f"attention_{slug(str(meta['dataset']))}_{slug(str(meta['algorithm']))}"
    return save_figure(fig, attention_frame(maps, labels.tolist()), Path(out_dir) / stem)
