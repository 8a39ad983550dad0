"""Domain-generalisation datasets (DATASETS registry) and their one-file ``.npz`` format.

``build_dataset(name, out_path, **params)`` writes a dataset file; ``load_dataset(name, path)``
returns a :class:`DomainDataset` whose ``envs[i]`` yields ``(x float32 [C,H,W], y int64)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from moebench.dg.datasets.base import (
    DatasetFileError,
    DomainDataset,
    DomainDatasetSpec,
    read_npz,
    write_npz_atomic,
)
from moebench.dg.datasets import domainbed  # noqa: F401  (registers the DomainBed image sets)
from moebench.dg.datasets.digits import (
    ColoredDigits,
    RotatedDigits,
    colored_environments,
    load_digit_images,
    rotated_environments,
)
from moebench.registry import DATASETS

__all__ = [
    "DATASETS", "DatasetFileError", "DomainDataset", "DomainDatasetSpec", "ColoredDigits",
    "RotatedDigits", "build_dataset", "colored_environments", "load_dataset",
    "load_digit_images", "read_npz", "rotated_environments", "write_npz_atomic",
]


def build_dataset(name: str, out_path: Path | str, **params: Any) -> None:
    """Build dataset ``name`` into ``out_path`` (atomic write); unknown name/param -> one line."""
    DATASETS.get(name).build(Path(out_path), **params)


def load_dataset(name: str, path: Path | str, **kwargs: Any) -> DomainDataset:
    """Load what :func:`build_dataset` wrote for ``name``; ``kwargs`` go to the class's
    ``load`` (e.g. ``augment``/``test_envs`` for the DomainBed image sets)."""
    return DATASETS.get(name).load(Path(path), **kwargs)
