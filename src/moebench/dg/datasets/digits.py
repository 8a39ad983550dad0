"""Embedded offline datasets: RotatedMNIST / ColoredMNIST built from scikit-learn's digits.

``sklearn.datasets.load_digits()`` bundles 1,797 real 8x8 handwritten digits (UCI optdigits,
values 0..16). They are scaled to [0, 1], upsampled (bilinear) to ``image_size`` and turned
into environments exactly the way DomainBed builds RotatedMNIST and ColoredMNIST: one seeded
shuffle, environment ``i`` takes ``images[perm[i::n_envs]]`` (disjoint subsets), then each
environment is rotated / coloured. The two helpers below take any [N, H, W] image stack, so a
real-MNIST dataset can reuse them.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import InterpolationMode, rotate

from moebench.errors import ParamsError
from moebench.dg.datasets.base import DomainDatasetSpec, EnvArrays
from moebench.registry import DATASETS

DIGITS_SOURCE = (
    "scikit-learn load_digits(): UCI ML hand-written digits (optdigits), 1,797 8x8 images, "
    "CC BY 4.0 (Alpaydin & Kaynak); environments built as DomainBed's RotatedMNIST/ColoredMNIST")


def _unit_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N,H,W] -> /255; float [N,H,W] must already lie in [0,1]. Returns float32 [N,H,W]."""
    x = torch.as_tensor(np.asarray(images))
    if x.dim() != 3:
        raise ValueError(f"images must have shape [N, H, W], got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    x = x.float()
    if x.numel() and (x.min() < 0 or x.max() > 1.0 + 1e-6):
        raise ValueError(f"float images must lie in [0, 1], got range [{x.min()}, {x.max()}]")
    return x


def _split(n: int, n_envs: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One seeded shuffle of ``range(n)``; environment i gets ``perm[i::n_envs]``."""
    perm = torch.randperm(n, generator=generator)
    return [perm[i::n_envs] for i in range(n_envs)]


def rotated_environments(images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                         angles: Sequence[float], seed: int) -> EnvArrays:
    """DomainBed RotatedMNIST: one env per angle over disjoint shuffled subsets.

    images uint8/float [N,H,W], labels [N] -> [(x float32 [N_i,1,H,W], y int64 [N_i])] per
    angle; rotation is bilinear about the centre with zero fill.
    """
    x_all, y_all = _unit_float(images), torch.as_tensor(np.asarray(labels)).long()
    generator = torch.Generator().manual_seed(int(seed))
    envs: EnvArrays = []
    for angle, idx in zip(angles, _split(len(x_all), len(angles), generator)):
        x = rotate(x_all[idx].unsqueeze(1), float(angle),
                   interpolation=InterpolationMode.BILINEAR, fill=[0.0])
        envs.append((x.clamp_(0, 1).numpy(), y_all[idx].numpy()))
    return envs


def _bernoulli(p: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """[n] int64 draws of Bernoulli(p)."""
    return (torch.rand(n, generator=generator) < p).long()


def colored_environments(images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                         flips: Sequence[float], seed: int,
                         label_noise: float = 0.25) -> EnvArrays:
    """DomainBed ColoredMNIST: binary label ``digit < 5`` xor Bernoulli(label_noise); colour =
    label xor Bernoulli(flip); the image goes to channel ``colour`` of 2 (the other is zero).

    images uint8/float [N,H,W], digit labels [N] -> [(x float32 [N_i,2,H,W], y int64 [N_i])]
    per flip probability.
    """
    x_all, digits = _unit_float(images), torch.as_tensor(np.asarray(labels)).long()
    generator = torch.Generator().manual_seed(int(seed))
    envs: EnvArrays = []
    for flip, idx in zip(flips, _split(len(x_all), len(flips), generator)):
        n = len(idx)
        y = (digits[idx] < 5).long() ^ _bernoulli(label_noise, n, generator)
        colour = y ^ _bernoulli(float(flip), n, generator)
        x = x_all[idx].unsqueeze(1).repeat(1, 2, 1, 1)
        x[torch.arange(n), 1 - colour] = 0.0
        envs.append((x.numpy(), y.numpy()))
    return envs


def load_digit_images(image_size: int = 16, max_images: int | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn digits scaled to [0,1] and bilinearly resized: (float32 [N,S,S], int64 [N])."""
    from sklearn.datasets import load_digits

    if int(image_size) < 8:
        raise ParamsError(f"image_size must be >= 8, got {image_size}")
    bunch = load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32) / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    if max_images is not None:
        if int(max_images) < 1:
            raise ParamsError(f"max_images must be >= 1, got {max_images}")
        x, y = x[: int(max_images)], y[: int(max_images)]
    if int(image_size) != 8:
        x = F.interpolate(x.unsqueeze(1), size=(int(image_size),) * 2, mode="bilinear",
                          align_corners=False).squeeze(1)
    return x.clamp_(0, 1), y


@DATASETS.register("rotated_digits")
class RotatedDigits(DomainDatasetSpec):
    """6 environments (0..75 degrees) of sklearn digits; 10 classes; input (1, S, S)."""

    NAME: ClassVar[str] = "rotated_digits"
    ANGLES: ClassVar[tuple[int, ...]] = (0, 15, 30, 45, 60, 75)
    ENVIRONMENTS: ClassVar[list[str]] = [str(a) for a in ANGLES]
    N_CLASSES: ClassVar[int] = 10
    INPUT_SHAPE: ClassVar[tuple[int, int, int]] = (1, 16, 16)
    PARAMS: ClassVar[dict[str, Any]] = {"seed": 0, "image_size": 16, "max_images": None}
    SOURCE: ClassVar[str] = DIGITS_SOURCE
    EMBEDDED: ClassVar[bool] = True

    @classmethod
    def _make_envs(cls, params: dict[str, Any]) -> EnvArrays:
        x, y = load_digit_images(params["image_size"], params["max_images"])
        return rotated_environments(x, y, cls.ANGLES, params["seed"])


@DATASETS.register("colored_digits")
class ColoredDigits(DomainDatasetSpec):
    """3 environments (colour flip 0.1, 0.2, 0.9) of sklearn digits; 2 classes; input (2, S, S)."""

    NAME: ClassVar[str] = "colored_digits"
    FLIPS: ClassVar[tuple[float, ...]] = (0.1, 0.2, 0.9)
    ENVIRONMENTS: ClassVar[list[str]] = ["+90%", "+80%", "-90%"]
    N_CLASSES: ClassVar[int] = 2
    INPUT_SHAPE: ClassVar[tuple[int, int, int]] = (2, 16, 16)
    PARAMS: ClassVar[dict[str, Any]] = {
        "seed": 0, "image_size": 16, "max_images": None, "label_noise": 0.25}
    SOURCE: ClassVar[str] = DIGITS_SOURCE
    EMBEDDED: ClassVar[bool] = True

    @classmethod
    def _make_envs(cls, params: dict[str, Any]) -> EnvArrays:
        x, y = load_digit_images(params["image_size"], params["max_images"])
        return colored_environments(x, y, cls.FLIPS, params["seed"], params["label_noise"])
